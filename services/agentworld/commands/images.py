"""`agentworld images ...`: build the local base, the runtime and per-environment images; prune leftovers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

images_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="Container images: local base, runtime, one small image per environment.")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@images_app.command("base")
def base(
    tag: Annotated[str, typer.Option(help="Tag of the local base image.")] = "agentworld/python-base:local",
    force: Annotated[bool, typer.Option(help="Rebuild even if the package set is unchanged.")] = False,
) -> None:
    """Build a Python base image from Debian packages (apt-get download + docker import): no registry needed."""
    from agentworld.images.base import build_base_image
    from agentworld.images.build import docker_client
    from agentworld.images.errors import ImagesError

    try:
        image_id = build_base_image(docker_client(), tag=tag, force=force)
    except ImagesError as exc:
        _fail(str(exc))
    typer.echo(f"{tag} {image_id}")


@images_app.command("build")
def build(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle directories, or directories of bundles.")],
    tag_prefix: Annotated[str, typer.Option(help="Repository prefix; env id `a_b` becomes PREFIXa-b.")] = "agentworld/env-",
    workers: Annotated[int, typer.Option(help="Environment images built in parallel.")] = 2,
    push: Annotated[str | None, typer.Option(help="Registry (host:port) to push the images to.")] = None,
    index: Annotated[Path | None, typer.Option(help="Index file to write (default: images.json next to the bundles).")] = None,
    base_image: Annotated[str, typer.Option(
        help="FROM of the runtime image: the registry-free local base, or e.g. python:3.11-slim already in the engine."
    )] = "agentworld/python-base:local",
    runtime_image: Annotated[str, typer.Option(help="Tag of the runtime image.")] = "agentworld/runtime:local",
    suite: Annotated[str | None, typer.Option(help="Also build one suite image holding every bundle, named so.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild environment images even when unchanged.")] = False,
) -> None:
    """Build the runtime image once and one image per environment (unchanged ones skipped), then write the index."""
    from rich.console import Console
    from rich.table import Table

    from agentworld.bundle import BundleError, find_bundles
    from agentworld.images.build import INDEX_NAME, ImageBuilder, write_index
    from agentworld.images.errors import ImagesError

    console = Console(stderr=True)
    try:
        dirs = find_bundles(bundles)
        if not dirs:
            _fail(f"no bundles found in {', '.join(map(str, bundles))}")
        builder = ImageBuilder(base_image=base_image, runtime_image=runtime_image, tag_prefix=tag_prefix,
                               workers=workers, log=lambda m: console.print(f"[dim]{m}[/]"))
        builder.build_runtime()
        results = builder.build_all(dirs, force=force)
        if suite:
            results.append(builder.build_suite(dirs, suite, force=force))
        if push:
            with console.status(f"pushing {len(results)} image(s) to {push}"):
                builder.push(results, push)
    except (BundleError, ImagesError) as exc:
        _fail(str(exc))
    first = bundles[0]
    target = index or (first.parent if (first / "env.json").is_file() else first) / INDEX_NAME
    write_index(results, target, builder.runtime_image, builder.runtime_id)

    table = Table(title=f"environment images (runtime {builder.runtime_image}, {builder.runtime_size / 1e6:.0f} MB)")
    for col in ("env", "image", "status", "added over runtime", "build s", "digest"):
        table.add_column(col, justify="right" if col in ("added over runtime", "build s") else "left", overflow="fold")
    for r in results:
        table.add_row(r.env_id, r.pushed or r.image, "skipped" if r.skipped else "built",
                      f"{r.added_bytes / 1024:.0f} KiB", f"{r.build_s:.1f}" if not r.skipped else "-",
                      (r.digest or "")[:19])
    Console().print(table)
    built = sum(not r.skipped for r in results)
    console.print(f"{built} built, {len(results) - built} unchanged; index: {target}")


@images_app.command("prune")
def prune(
    all_owners: Annotated[bool, typer.Option("--all", help="Also containers of processes still running.")] = False,
    images: Annotated[bool, typer.Option(help="Also environment images built on an older runtime image.")] = False,
    runtime_image: Annotated[str, typer.Option(help="The current runtime image.")] = "agentworld/runtime:local",
) -> None:
    """Remove environment containers and networks left behind by a process that was killed outright."""
    from agentworld.images.backend import prune_stale

    typer.echo(f"removed {prune_stale(all_owners=all_owners)} container(s)/network(s)")
    if images:
        from agentworld.images.build import docker_client, prune_superseded_images

        typer.echo(f"removed {prune_superseded_images(docker_client(), runtime_image)} superseded image(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(images_app, name="images")
