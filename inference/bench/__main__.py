"""``python -m inference.bench``: the same options and report as ``peekbot bench``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from inference import bench


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.bench", description=bench.__doc__.splitlines()[0])
    bench.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.stdout.write(bench.format_table(bench.run_bench(args)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
