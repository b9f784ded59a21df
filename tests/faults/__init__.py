"""Fault and bad-input suite, by component (a package, so its module names do not clash with tests/<component>)."""
