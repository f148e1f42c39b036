"""Placeholders for command groups whose method is not built yet: they say so and exit non-zero."""

from __future__ import annotations

import typer

NOT_BUILT_EXIT_CODE = 3


def not_built_group(name: str, commands: list[str], *, issue: int, what: str) -> typer.Typer:
    """A typer group whose every command reports that `what` is not built yet (tracked in `issue`)."""
    group = typer.Typer(
        help=f"{what[0].upper() + what[1:]} (not built yet: issue #{issue}).",
        no_args_is_help=True,
        add_completion=False,
    )

    def make(command: str):
        def _command(ctx: typer.Context) -> None:
            typer.echo(
                f"neurodiff {name} {command}: {what} is not built yet in this version "
                f"(tracked as issue #{issue}). Nothing was run.",
                err=True,
            )
            raise typer.Exit(NOT_BUILT_EXIT_CODE)

        _command.__doc__ = f"Not built yet ({what}, issue #{issue})."
        return _command

    settings = {"allow_extra_args": True, "ignore_unknown_options": True}
    for command in commands:
        group.command(command, context_settings=settings)(make(command))
    return group
