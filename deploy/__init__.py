"""`make deploy STACK=name`: the worker image, the artefacts, the stack, the first account.

Each step is a module named for what it does (`image`, `artifacts`, `stack`, `bootstrap`);
`python -m deploy` runs them in order. Every AWS client comes from one boto3 session, so
AWS_ENDPOINT_URL and the per-service AWS_ENDPOINT_URL_<SERVICE> variables reach every call, as
boto3 reads them itself: the same program deploys to AWS and to an emulator such as LocalStack.
"""


class DeployError(Exception):
    """A step cannot go on, for a reason the user can act on; the message is one line."""
