"""Entry point of the worker process: ``python -m wrapperkernel.worker --fd N``."""

from wrapperkernel.worker.main import main

main()
