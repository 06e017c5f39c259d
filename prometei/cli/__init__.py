"""`python -m prometei`: the operator CLI. Each command group lives in its own module here."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default=".env",
    show_default=True,
    help="Local settings file; real environment variables win over it.",
)
def cli(env_file: str) -> None:
    """Operate the amoCRM -> Rukovoditel pipeline.

    Settings come from the environment and the --env-file (see .env.example).
    Exit codes: 0 success, 1 a check or request failed, 2 usage or configuration error.
    """
    from prometei.config import load_dotenv_file
    from prometei.services import reset_services

    load_dotenv_file(env_file)
    reset_services()


def main() -> None:
    from prometei.cli import deals, serve

    cli.add_command(serve.serve)
    cli.add_command(deals.deals)
    from prometei.cli import doctor, erp, leads, tokens, webhook_send

    cli.add_command(doctor.doctor)
    cli.add_command(erp.erp)
    cli.add_command(webhook_send.webhook)
    cli.add_command(leads.replay)
    cli.add_command(leads.backfill)
    cli.add_command(tokens.tokens)
    cli(prog_name="python -m prometei")
