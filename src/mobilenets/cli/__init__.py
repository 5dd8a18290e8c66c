"""The ``mobilenets`` command line: a thin argparse layer over the library, no logic of its own.

One module per part of the library (numbers, weights, training, deploy, runtime); each adds its
commands' parsers and holds the functions they call, which import the library lazily, so that
``mobilenets run`` and ``compile-c`` work where only NumPy is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from . import deploy, numbers, runtime, search, training, weights

# Import names whose pip package is named otherwise.
PIP_NAMES = {"PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python", "sklearn": "scikit-learn"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobilenets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    numbers.add_profile(commands)
    weights.add_convert(commands)
    training.add_train(commands)
    training.add_evaluate(commands)
    training.add_predict(commands)
    training.add_demo(commands)
    deploy.add_export(commands)
    deploy.add_quantize(commands)
    deploy.add_bench(commands)
    search.add_latency(commands)
    numbers.add_figures(commands)
    runtime.add_run(commands)
    runtime.add_compile_c(commands)
    runtime.add_web(commands)
    numbers.add_models(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        NotImplementedError,
    ) as error:  # CheckpointError is a ValueError
        print(f"mobilenets {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:  # a package not installed: optional ones, or torch in a NumPy-only install
        package = (getattr(error, "name", None) or "").split(".")[0]
        hint = (
            f" (pip install {PIP_NAMES.get(package, package)})"
            if package and "pip install" not in str(error)
            else ""
        )
        print(f"mobilenets {args.command}: error: {error}{hint}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mobilenets run ... | head`: the reader has gone, which is not an error
        with contextlib.suppress(OSError, ValueError, AttributeError):  # Python's final flush goes nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


__all__ = ["build_parser", "main"]
