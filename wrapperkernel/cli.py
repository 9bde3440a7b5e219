"""The ``wrapperkernel`` command: run the kernel, install or uninstall its kernelspec."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import argparse

DEFAULT_NAME = "wrapperkernel"
DEFAULT_DISPLAY_NAME = "Python (wrapperkernel)"
RESOURCE_FILES = ("kernel.json", "logo-32x32.png", "logo-64x64.png", "logo-svg.svg")


def kernelspec_source() -> Path:
    """The kernelspec folder: packaged in the wheel, or the repo's for an editable install."""
    from importlib import resources

    packaged = resources.files("wrapperkernel") / "_static" / "kernelspec"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "kernelspec"


def build_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog="wrapperkernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the kernel (Jupyter calls this)")
    run.add_argument("-f", "--connection-file", required=True)

    for name, text in (("install", "install the kernelspec"),
                       ("uninstall", "remove the kernelspec")):
        cmd = sub.add_parser(name, help=text)
        where = cmd.add_mutually_exclusive_group()
        where.add_argument("--user", action="store_true", help="into the user's Jupyter data dir")
        where.add_argument("--sys-prefix", action="store_true", help="into sys.prefix (a venv)")
        where.add_argument("--prefix", help="into PREFIX/share/jupyter/kernels")
        cmd.add_argument("--name", default=DEFAULT_NAME, help="kernelspec name")
        if name == "install":
            cmd.add_argument("--display-name", default=DEFAULT_DISPLAY_NAME,
                             help="name shown in the launcher")
    return parser


def install(args: argparse.Namespace) -> str:
    # Imported here, not at the top: ``run`` is the kernel process, which needs none of them.
    import shutil
    import tempfile

    from jupyter_client.kernelspec import KernelSpecManager

    source = kernelspec_source()
    spec = json.loads((source / "kernel.json").read_text())
    spec["argv"][0] = sys.executable
    spec["display_name"] = args.display_name
    prefix = sys.prefix if args.sys_prefix else args.prefix
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / args.name
        folder.mkdir()
        for name in RESOURCE_FILES[1:]:
            shutil.copy(source / name, folder / name)
        # Served by Jupyter Server as a kernelspec resource: a widget output restored
        # after a page reload loads the page client from there (widgets/page.js).
        from wrapperkernel.address.page_script import JS_FILE_NAME, js_path

        shutil.copy(js_path(), folder / JS_FILE_NAME)
        (folder / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        return KernelSpecManager().install_kernel_spec(
            str(folder), kernel_name=args.name, user=args.user, prefix=prefix
        )


def uninstall(args: argparse.Namespace) -> str:
    import shutil

    from jupyter_client.kernelspec import KernelSpecManager

    manager = KernelSpecManager()
    if args.prefix or args.sys_prefix:
        prefix = sys.prefix if args.sys_prefix else args.prefix
        folder = Path(prefix) / "share" / "jupyter" / "kernels" / args.name
        if not folder.is_dir():
            raise SystemExit(f"no kernelspec {args.name!r} under {prefix}")
        shutil.rmtree(folder)
        return str(folder)
    return manager.remove_kernel_spec(args.name)


def run_kernel(connection_file: str) -> NoReturn:
    from wrapperkernel.kernel.app import run

    raise SystemExit(run(connection_file))


def kernelspec_run(argv: list[str]) -> str | None:
    """The connection file of exactly the command line the kernelspec starts
    (``run -f FILE``), which is parsed without argparse: importing it is 0.3 MiB the
    kernel process would keep. Any other command line goes to argparse."""
    if len(argv) == 3 and argv[0] == "run" and argv[1] in ("-f", "--connection-file") \
            and not argv[2].startswith("-"):
        return argv[2]
    return None


def main(argv: list[str] | None = None) -> None:
    connection_file = kernelspec_run(sys.argv[1:] if argv is None else argv)
    if connection_file is not None:
        run_kernel(connection_file)
    args = build_parser().parse_args(argv)
    if args.command == "run":
        run_kernel(args.connection_file)
    if args.command == "install":
        print(f"Installed kernelspec {args.name!r} in {install(args)}")
    else:
        print(f"Removed kernelspec {args.name!r} from {uninstall(args)}")
