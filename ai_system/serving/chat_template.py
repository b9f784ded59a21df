"""The chat template: how ``/v1/chat/completions`` turns a list of messages into one prompt.

The project's models are base models (next-token predictors trained on text, no instruction tuning and
no role tokens), so the template is plain text a base model has seen the like of, one paragraph per
message, and the prompt ends where the assistant's reply should begin::

    System: You are terse.

    User: Say hi.

    Assistant:

``system`` and ``developer`` (OpenAI's newer name for it) both read ``System``. The same template
as Jinja (``CHAT_TEMPLATE_JINJA``) goes into the ``tokenizer_config.json`` that ``hub_cache`` writes,
so a client that formats chats itself with Hugging Face ``apply_chat_template`` counts the same tokens;
a test checks that the two render alike.
"""

from __future__ import annotations

from collections.abc import Sequence

ROLE_NAMES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
GENERATION_PROMPT = "Assistant:"

CHAT_TEMPLATE_JINJA = (
    "{%- set names = {'system': 'System', 'developer': 'System', 'user': 'User', 'assistant': 'Assistant'} %}"
    "{%- for message in messages %}{{ names[message['role']] + ': ' + message['content'] + '\\n\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}Assistant:{%- endif %}"
)


def format_chat(messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True) -> str:
    """The prompt for ``(role, text)`` messages; roles are the keys of ``ROLE_NAMES``."""
    if not messages:
        raise ValueError("messages must hold at least one message, got none")
    unknown = [role for role, _ in messages if role not in ROLE_NAMES]
    if unknown:
        raise ValueError(f"message roles must be one of {sorted(ROLE_NAMES)}, got {unknown[0]!r}")
    prompt = "".join(f"{ROLE_NAMES[role]}: {text}\n\n" for role, text in messages)
    return prompt + GENERATION_PROMPT if add_generation_prompt else prompt
