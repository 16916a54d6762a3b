"""The conventions every `python -m` tool of hai-tools follows: offline defaults, typed errors printed as one
line with exit status 2, Ctrl-C reported without a traceback."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

from rich.console import Console

from hai_tools.errors import HaiError

console = Console(stderr=True)


def offline_defaults() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("USE_TF", "0")  # datasets and transformers would import TensorFlow (slow) otherwise
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def run_cli(main: Callable[[list[str]], int], argv: list[str], interrupted: str = "interrupted") -> int:
    """Run a CLI body: HaiError -> `error: <message>` on stderr and exit 2; Ctrl-C -> exit 130."""
    offline_defaults()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return main(argv)
    except HaiError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print(interrupted, highlight=False)
        return 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        console.print(
            f"[red]error:[/red] no space left on device{where}; nothing was published", highlight=False
        )
        return 2
