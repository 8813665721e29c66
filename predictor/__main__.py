"""`python -m predictor`: parse settings, load the model, serve it (serving.startup)."""

from __future__ import annotations

import sys

from serving.fast_routes import FastJsonRoutes
from serving.settings import parse_settings
from serving.startup import check_workers, serve, show_service_logs

from .model import SentimentPredictor
from .routes import fast_routes, kserve_only
from .settings import PredictorSettings


def main(argv: list[str] | None = None) -> None:
    from kserve import model_server  # parses argv at import; keep it out of module import time

    settings = parse_settings(PredictorSettings, sys.argv[1:] if argv is None else argv, "python -m predictor",
                              "Sentiment predictor (KServe model server).", parent=model_server.parser)
    check_workers(settings.workers)  # before loading a model for nothing
    show_service_logs()  # the model's load lines, thread count included
    model = SentimentPredictor(settings)
    model.load()
    serve(model, settings, lambda app: FastJsonRoutes(app, fast_routes(model), passthrough=kserve_only))


if __name__ == "__main__":
    main()
