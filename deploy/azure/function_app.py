"""Azure Functions app (Python v2 programming model): Defender for Cloud alerts delivered by Event Grid.

Deployed with this folder's host.json and requirements.txt (see README.md). A failed step raises, so Event Grid
retries the delivery, and the retry resumes the response where it stopped (the case folder holds its state).
"""

import azure.functions as func

from cloudir.serverless.azure_function import main

app = func.FunctionApp()


@app.function_name(name="cloudir_respond")
@app.event_grid_trigger(arg_name="event")
def cloudir_respond(event: func.EventGridEvent) -> None:
    """Run the matching playbook for the alert in one Event Grid event."""
    main(event)
