"""`python -m predictor`: parse settings, load the model, serve it (serving.startup)."""

from __future__ import annotations

import sys

from serving.settings import early_settings, parse_settings
from serving.startup import check_workers, hold_service_logs

from .loading import load_in_background
from .settings import PredictorSettings

PROG, DESCRIPTION = "python -m predictor", "Sentiment predictor (KServe model server)."


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # The model loads while KServe is imported (predictor/loading.py); the full parse below, with
    # KServe's own flags, still decides --help and every error message.
    early = early_settings(PredictorSettings, argv)
    check_workers(early.workers)  # before loading a model for nothing
    hold_service_logs()  # the load logs before KServe's log format can be set up
    loading = load_in_background(early)
    from kserve import model_server  # parses argv at import; keep it out of module import time

    from serving.fast_routes import FastJsonRoutes
    from serving.startup import serve, show_service_logs

    from .model import SentimentPredictor
    from .routes import fast_routes, kserve_only

    settings = parse_settings(PredictorSettings, argv, PROG, DESCRIPTION, parent=model_server.parser)
    show_service_logs()  # the model's load lines, thread count included
    model = SentimentPredictor(settings)
    model.load(loading.result())
    serve(model, settings, lambda app: FastJsonRoutes(app, fast_routes(model), passthrough=kserve_only))


if __name__ == "__main__":
    main()
