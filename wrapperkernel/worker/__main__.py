"""Entry point of the worker process: ``python -m wrapperkernel.worker --fd N``."""

from wrapperkernel import pydantic_plugins

pydantic_plugins.hold_back()  # released before the first request (Worker.run)
from wrapperkernel.worker.main import main  # noqa: E402 - after the hold

main()
