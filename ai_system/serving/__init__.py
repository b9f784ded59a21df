"""Serving: the HTTP model server, the threaded-server helper, load generation and the MLPerf driver.

``server`` puts an ``ai_system.inference.engine.Engine`` behind OpenAI-style ``/v1/completions``
(the ``ai-system serve`` command); ``threaded`` runs any such app on loopback inside a process;
``loadgen`` is the open-loop client (``ai-system loadtest``) and offline submission; ``mlperf``
drives an engine with MLPerf LoadGen. Everything here sits on top of ``inference``, never under it.
"""
