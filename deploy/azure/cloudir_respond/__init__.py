"""Azure Functions (Python v1 model) entry point: Event Grid events carrying Defender for Cloud alerts."""

from cloudir.serverless.azure_function import main

__all__ = ["main"]
