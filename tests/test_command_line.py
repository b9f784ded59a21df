import pytest

from ai_system.cli import COMMAND_MODULES, build_parser, main


def test_every_listed_module_registers_the_command_it_is_listed_under():
    for name in COMMAND_MODULES:
        subparsers = build_parser(name)._subparsers._group_actions[0]
        assert list(subparsers.choices) == [name]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in COMMAND_MODULES)


def test_unknown_command_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["launch"])
    assert "invalid choice: 'launch'" in capsys.readouterr().err
