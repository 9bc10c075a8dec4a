"""How ``facerecon`` finds its commands: serving ones built in, training ones through entry points,
and a clear message where the training code is not installed (a serving-only install)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from service.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def test_serving_and_training_commands_are_listed():
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"reconstruct", "serve"} <= set(commands)
    assert {"train", "export", "evaluate", "calibrate-landmarks", "prepare"} <= set(commands)


def test_a_training_command_without_the_training_code_says_which_extra_to_install():
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'training'):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from service.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script, "train", "--data", "d", "--config", "c", "--out", "o"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "facerecon[train]" in run.stderr or ".[train]" in run.stderr
    assert "Traceback" not in run.stderr
    listed = subprocess.run([sys.executable, "-c", script, "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0 and "train" in listed.stdout and "reconstruct" in listed.stdout


def _commands() -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = [action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def test_every_option_of_every_command_has_help_that_shows_its_default():
    commands = _commands()
    assert {"reconstruct", "serve", "train", "export", "evaluate"} <= set(commands)
    for name, parser in [("facerecon", build_parser()), *commands.items()]:
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, where
            shown = formatter._expand_help(action)
            if action.default not in (None, argparse.SUPPRESS):
                assert "default" in shown, where
