"""The ``mammocad`` command line: one subcommand per stage (nnU-Net style)."""

from __future__ import annotations

import warnings

import typer

from mammocad.cli import bench, data
from mammocad.cli.dashboard import dashboard
from mammocad.cli.demo import demo
from mammocad.cli.evaluate import compare, evaluate
from mammocad.cli.experiments import ablate, cv
from mammocad.cli.explain import explain
from mammocad.cli.export import export
from mammocad.cli.preprocess import preprocess
from mammocad.cli.serve import serve
from mammocad.cli.synth import synth
from mammocad.cli.train import calibrate, predict, train
from mammocad.cli.tune import tune

app = typer.Typer(
    name="mammocad",
    help="Mammography CAD: ingest datasets, preprocess, train, evaluate, explain, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data.app, name="data")
app.command("synth")(synth)
app.command("preprocess")(preprocess)
app.add_typer(bench.app, name="bench")
app.command("train")(train)
app.command("predict")(predict)
app.command("calibrate")(calibrate)
app.command("evaluate")(evaluate)
app.command("compare")(compare)
app.command("explain")(explain)
app.command("export")(export)
app.command("cv")(cv)
app.command("tune")(tune)
app.command("ablate")(ablate)
app.command("demo")(demo)
app.command("serve")(serve)
app.command("dashboard")(dashboard)


def main() -> None:
    """Console-script entry point."""
    # Lightning 2.6 calls a torch.utils._pytree API that newer torch deprecates; nothing for users to act on.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    app()


if __name__ == "__main__":
    main()
