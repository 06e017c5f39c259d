"""`python -m prometei`: the operator CLI. Each command group lives in its own module here."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default=".env",
    show_default=True,
    help="Local settings file; real environment variables win over it. A file named here "
    "must exist (the default .env may be absent).",
)
@click.pass_context
def cli(ctx: click.Context, env_file: str) -> None:
    """Operate the amoCRM -> Rukovoditel pipeline.

    Settings come from the environment and the --env-file (see .env.example).
    Exit codes: 0 success, 1 a check or request failed, 2 usage or configuration error.

    \b
    Examples:
      python -m prometei doctor
      python -m prometei --env-file .env.production webhook status
      python -m prometei backfill --help
    """
    from pathlib import Path

    from prometei.config import load_dotenv_file
    from prometei.services import reset_services

    chosen = ctx.get_parameter_source("env_file") is not click.core.ParameterSource.DEFAULT
    if chosen and not Path(env_file).is_file():
        # A mistyped name would otherwise run against whatever the environment holds.
        raise click.BadParameter(
            f"{env_file!r} does not exist (or is not a file); check the name and the "
            "current folder",
            param_hint="--env-file",
        )
    load_dotenv_file(env_file)
    reset_services()


def main() -> None:
    from prometei.cli import deals, serve

    cli.add_command(serve.serve)
    cli.add_command(deals.deals)
    from prometei.cli import doctor, erp, leads, tokens, webhook_health, webhook_send

    cli.add_command(doctor.doctor)
    cli.add_command(erp.erp)
    webhook_send.webhook.add_command(webhook_health.register)
    webhook_send.webhook.add_command(webhook_health.status)
    cli.add_command(webhook_send.webhook)
    cli.add_command(leads.replay)
    cli.add_command(leads.backfill)
    cli.add_command(tokens.tokens)
    cli(prog_name="python -m prometei")
