"""Step 2: put what the template names by a local path in S3, and name it there instead.

CloudFormation reads code and definitions only from S3, while `make package` writes a template
whose functions say `CodeUri: ./deployment.zip` and whose state machines may say
`DefinitionUri: statemachines/....json`, paths relative to the template. This is what
`aws cloudformation package` does, with boto3 alone: for each property below that holds a local
path, upload the file (a directory is zipped, reproducibly), under a key derived from its
content, and write the S3 location in its place. Nested templates (`AWS::CloudFormation::Stack`,
`AWS::Serverless::Application`) are packaged the same way, then uploaded. Values that are already
S3 locations, URLs or intrinsic functions are left as they are. Not covered, since no Runner
template uses them: `AWS::Include` transforms and the AppSync, Glue and Elastic Beanstalk
properties the AWS CLI also rewrites.

The bucket is the stack's own, `<stack>-artifacts-<account>-<region>`, private and created on
first use. Its name can be guessed, so every call passes the account as the expected owner: a
bucket of that name created by someone else is refused rather than written to.
"""
from __future__ import annotations

import copy
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from botocore.exceptions import ClientError

from chalicelib.platform.template import load_template
from deploy import DeployError

# How a rewritten property names its S3 object: an s3:// URI, or a mapping with these two keys.
URI = None
BUCKET_KEY = ("Bucket", "Key")
S3_BUCKET_KEY = ("S3Bucket", "S3Key")
TEMPLATE = "template"  # a nested template: packaged in turn, then named by its https URL


@dataclass(frozen=True)
class Export:
    """A property holding a local path, and how to rewrite it."""

    property: str
    form: Any
    zip_directory: bool = False


EXPORTS: dict[str, tuple[Export, ...]] = {
    "AWS::Serverless::Function": (Export("CodeUri", URI, zip_directory=True),),
    "AWS::Serverless::LayerVersion": (Export("ContentUri", URI, zip_directory=True),),
    "AWS::Serverless::Api": (Export("DefinitionUri", URI),),
    "AWS::Serverless::HttpApi": (Export("DefinitionUri", URI),),
    "AWS::Serverless::StateMachine": (Export("DefinitionUri", BUCKET_KEY),),
    "AWS::Serverless::Application": (Export("Location", TEMPLATE),),
    "AWS::Lambda::Function": (Export("Code", S3_BUCKET_KEY, zip_directory=True),),
    "AWS::Lambda::LayerVersion": (Export("Content", S3_BUCKET_KEY, zip_directory=True),),
    "AWS::StepFunctions::StateMachine": (Export("DefinitionS3Location", BUCKET_KEY),),
    "AWS::ApiGateway::RestApi": (Export("BodyS3Location", BUCKET_KEY),),
    "AWS::CloudFormation::Stack": (Export("TemplateURL", TEMPLATE),),
}

# The largest template CloudFormation takes inline (TemplateBody); a larger one goes through S3.
TEMPLATE_BODY_LIMIT = 51_200
# Every zip entry gets this date, so the same files always make the same zip (and the same key).
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_REMOTE_PREFIXES = ("s3://", "http://", "https://")


def bucket_name(stack_name: str, account_id: str, region: str) -> str:
    """`<stack>-artifacts-<account>-<region>`, shortened with a hash of the stack name past 63 characters."""
    suffix = f"-artifacts-{account_id}-{region}"
    stack = stack_name.lower()
    if len(stack) + len(suffix) <= 63:
        return stack + suffix
    digest = hashlib.sha256(stack_name.encode()).hexdigest()[:8]
    keep = 63 - len(suffix) - len(digest) - 1
    return f"{stack[:keep].rstrip('-')}-{digest}{suffix}"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def ensure_bucket(s3: Any, name: str, account_id: str, region: str) -> None:
    """Create the private artefact bucket unless this account already has it."""
    try:
        s3.head_bucket(Bucket=name, ExpectedBucketOwner=account_id)
        return
    except ClientError as exc:
        if _error_code(exc) in ("403", "AccessDenied"):
            raise DeployError(f"the artefact bucket {name} exists but is not this account's: "
                              "name another with --artifact-bucket") from None
        if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=name, **location)
    except ClientError as exc:
        if _error_code(exc) == "BucketAlreadyExists":
            raise DeployError(f"the artefact bucket name {name} is taken by another account: "
                              "name another with --artifact-bucket") from None
        if _error_code(exc) != "BucketAlreadyOwnedByYou":
            raise
    s3.put_public_access_block(Bucket=name, ExpectedBucketOwner=account_id, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})


class ArtifactStore:
    """The artefact bucket: content-addressed uploads, and the names CloudFormation reads them by."""

    def __init__(self, s3: Any, bucket: str, account_id: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.account_id = account_id

    def put(self, data: bytes, suffix: str) -> str:
        """Upload unless an object of the same content is there already; answers its key."""
        key = f"artifacts/{hashlib.sha256(data).hexdigest()}{suffix}"
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key, ExpectedBucketOwner=self.account_id)
            return key
        except ClientError as exc:
            if _error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise
        self.s3.upload_fileobj(io.BytesIO(data), self.bucket, key,
                               ExtraArgs={"ExpectedBucketOwner": self.account_id})
        return key

    def uri(self, key: str) -> str:
        """`s3://bucket/key`, as SAM's *Uri properties take it."""
        return f"s3://{self.bucket}/{key}"

    def url(self, key: str) -> str:
        """The object's path-style URL at the S3 endpoint in use (AWS's, or an emulator's)."""
        return f"{self.s3.meta.endpoint_url}/{self.bucket}/{key}"


def template_source(text: str, store: ArtifactStore) -> dict:
    """How CloudFormation gets the template: inline when it fits the API's limit, else from the bucket.

    Inline, CloudFormation needs nothing more; through S3 it must read the bucket at the URL the
    endpoint in use gives (AWS's, or an emulator's, which must recognise its own URLs).
    """
    if len(text.encode()) <= TEMPLATE_BODY_LIMIT:
        return {"TemplateBody": text}
    return {"TemplateURL": store.url(store.put(text.encode(), ".yaml"))}


def zip_directory(directory: Path) -> bytes:
    """The directory as a zip whose bytes depend only on the files' paths, contents and modes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            entry = zipfile.ZipInfo(path.relative_to(directory).as_posix(), _ZIP_DATE)
            entry.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, path.read_bytes())
    return buffer.getvalue()


def dump_template(template: dict) -> str:
    """YAML CloudFormation reads (intrinsic functions in their long form), keys in template order."""
    return yaml.safe_dump(template, sort_keys=False, default_flow_style=False, width=1000)


def _is_local(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not value.startswith(_REMOTE_PREFIXES)


def _upload_local(value: str, export: Export, base_dir: Path, store: ArtifactStore,
                  where: str, nested: Callable[[Path], str]) -> Any:
    path = (base_dir / value).resolve()
    if not path.exists():
        raise DeployError(f"{where} names {value}, which does not exist (relative to {base_dir})")
    if export.form == TEMPLATE:
        if not path.is_file():
            raise DeployError(f"{where} names {value}, a directory where a template file belongs")
        return nested(path)
    if path.is_dir():
        if not export.zip_directory:
            raise DeployError(f"{where} names {value}, a directory where a file belongs")
        key = store.put(zip_directory(path), ".zip")
    else:
        key = store.put(path.read_bytes(), path.suffix)
    if export.form is URI:
        return store.uri(key)
    bucket_field, key_field = export.form
    return {bucket_field: store.bucket, key_field: key}


def package_template(template: dict, base_dir: Path, store: ArtifactStore) -> dict:
    """A copy of the template whose local paths (relative to base_dir) are S3 locations."""
    packaged = copy.deepcopy(template)

    def nested(path: Path) -> str:
        child = package_template(load_template(path), path.parent, store)
        return store.url(store.put(dump_template(child).encode(), ".yaml"))

    for logical_id, resource in (packaged.get("Resources") or {}).items():
        properties = resource.get("Properties") or {}
        for export in EXPORTS.get(resource.get("Type", ""), ()):
            value = properties.get(export.property)
            if _is_local(value):
                where = f"{logical_id}.{export.property}"
                properties[export.property] = _upload_local(value, export, base_dir, store, where, nested)
    return packaged
