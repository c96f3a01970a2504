"""Cloud Function (2nd gen, functions-framework): Security Command Center findings delivered by Pub/Sub.

Entry point ``cloudir_respond``: a CloudEvent ``google.cloud.pubsub.topic.v1.messagePublished`` whose message data
is the base64 SCC notification. A failed step raises, so Pub/Sub redelivers and the response resumes.
"""

import functions_framework
from cloudevents.http import CloudEvent

from cloudir.serverless.gcp_function import handle_pubsub


@functions_framework.cloud_event
def cloudir_respond(cloud_event: CloudEvent) -> None:
    """Run the matching playbook for the finding in one Pub/Sub message."""
    handle_pubsub(cloud_event)
