"""``python -m wrapperkernel`` is the ``wrapperkernel`` command."""

from wrapperkernel.cli import main

main()
