"""An app written with the official ``inngest`` Python SDK, served by FastAPI, whose function
has three steps and writes a line to ``$STEP_CALLS`` each time a step's code runs: the rerun
test counts which steps ran in which run.

    INNGEST_DEV=1 INNGEST_BASE_URL=http://127.0.0.1:8288 STEP_CALLS=/tmp/calls \\
        uvicorn tests.acceptance.inngest_py_rerun_app:app --port 8000
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import fastapi
import inngest
import inngest.fast_api

client = inngest.Inngest(app_id="py-rerun", logger=logging.getLogger("py-rerun"))


def _ran(run_id: str, step: str) -> None:
    with open(os.environ["STEP_CALLS"], "a") as calls:
        calls.write(f"{run_id} {step}\n")


@client.create_function(fn_id="three-steps", trigger=inngest.TriggerEvent(event="rerun/go"))
def three_steps(ctx: inngest.ContextSync) -> dict[str, Any]:
    def fetch() -> str:
        _ran(ctx.run_id, "fetch")
        return uuid.uuid4().hex  # a new value each time the code runs

    def transform() -> str:
        _ran(ctx.run_id, "transform")
        return fetched.upper()

    def store() -> int:
        _ran(ctx.run_id, "store")
        return len(transformed)

    fetched = ctx.step.run("fetch", fetch)
    transformed = ctx.step.run("transform", transform)
    stored = ctx.step.run("store", store)
    return {"fetched": fetched, "transformed": transformed, "stored": stored}


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, [three_steps])
