"""The object stores (`f2f.serving.jobs.objects`): one contract on a local folder and on an S3-protocol server over HTTP
(moto's server mode, its own process on 127.0.0.1), plus what only S3 has: presigned URLs, lifecycle rules, an
endpoint that is down."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from f2f.errors import InvalidConfig
from f2f.serving.jobs.objects import NoSuchObject, Objects, ObjectStoreUnavailable, S3Objects, open_objects

JOB = "0123456789abcdef0123456789abcdef"


def _bucket(endpoint: str, name: str = "f2f") -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)


@pytest.fixture(params=["local", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> Objects:
    if request.param == "local":
        return open_objects((tmp_path / "objects").as_uri())
    endpoint = request.getfixturevalue("s3_endpoint")
    _bucket(endpoint)
    return open_objects("s3://f2f/deploy-a", endpoint_url=endpoint)


def test_an_object_reads_back_whole_and_in_chunks(objects: Objects) -> None:
    data = os.urandom(3 * 2**20 + 5)  # more than one chunk
    objects.put(f"{JOB}/video.mp4", data, "video/mp4")
    assert objects.get(f"{JOB}/video.mp4") == data
    chunks = list(objects.stream(f"{JOB}/video.mp4"))
    assert len(chunks) > 1 and b"".join(chunks) == data


def test_a_put_replaces_the_object_whole(objects: Objects) -> None:
    objects.put(f"{JOB}/edited.png", b"first, and longer")
    objects.put(f"{JOB}/edited.png", b"second")
    assert objects.get(f"{JOB}/edited.png") == b"second"


def test_a_file_is_uploaded_as_it_is(objects: Objects, tmp_path: Path) -> None:
    source = tmp_path / "collage.png"
    source.write_bytes(os.urandom(100_000))
    objects.put_file(f"{JOB}/collage.png", source, "image/png")
    assert objects.get(f"{JOB}/collage.png") == source.read_bytes()


def test_a_missing_object_is_no_such_object(objects: Objects) -> None:
    assert not objects.exists(f"{JOB}/edited.png")
    with pytest.raises(NoSuchObject):
        objects.get(f"{JOB}/edited.png")


def test_keys_and_delete_keep_to_their_prefix(objects: Objects) -> None:
    other = "f" * 32
    for key in (f"{JOB}/source.png", f"{JOB}/candidates/frame_004.png", f"{other}/source.png"):
        objects.put(key, b"x")
    assert objects.keys(JOB) == [f"{JOB}/candidates/frame_004.png", f"{JOB}/source.png"]
    assert objects.delete_prefix(JOB) == 2
    assert objects.keys(JOB) == [] and objects.exists(f"{other}/source.png")
    assert objects.delete_prefix(JOB) == 0


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", f"{JOB}/../x", f"{JOB}//x", "a b", f"{JOB}/./x", "é"])
def test_a_key_that_is_not_a_safe_relative_key_never_reaches_a_path_or_a_request(objects: Objects, key: str) -> None:
    with pytest.raises(ValueError, match="not an object key"):
        objects.put(key, b"x")
    with pytest.raises(ValueError, match="not an object key"):
        objects.get(key)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://host/x", "must be a folder (file:///path) or a bucket"),
        ("s3://", "must be s3://bucket"),
        ("s3://bucket/p?x=1", "must be s3://bucket"),
        ("file://otherhost/x", "a file:// URL names a local folder"),
    ],
)
def test_a_bad_location_is_refused_naming_the_field(url: str, rule: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        open_objects(url, field="jobs.objects")
    assert (info.value.field, info.value.value) == ("jobs.objects", url) and rule in info.value.rule


# --- local only ---------------------------------------------------------------------------------------------------


def test_local_objects_are_files_served_as_they_are(tmp_path: Path) -> None:
    objects = open_objects(str(tmp_path / "objects"))
    objects.put(f"{JOB}/edited.png", b"png")
    assert objects.local_path(f"{JOB}/edited.png") == tmp_path / "objects" / JOB / "edited.png"
    assert objects.presigned_url(f"{JOB}/edited.png", 60) is None


def test_a_write_the_folder_refuses_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    objects = open_objects(str(tmp_path / "objects"))
    objects.put(JOB, b"a file where the job's folder belongs")  # any OSError of the folder: this one works as root too
    with pytest.raises(ObjectStoreUnavailable) as info:
        objects.put(f"{JOB}/edited.png", b"png")
    assert f"cannot write {JOB}/edited.png" in str(info.value) and info.value.retry_after_s > 0


def test_a_folder_that_is_a_file_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "objects").write_text("not a folder")
    with pytest.raises(InvalidConfig) as info:
        open_objects(str(tmp_path / "objects")).check("jobs.objects")
    assert info.value.field == "jobs.objects" and "cannot write there" in info.value.rule


# --- S3 only ------------------------------------------------------------------------------------------------------


def test_a_presigned_url_serves_the_object_without_credentials(s3_endpoint: str) -> None:
    _bucket(s3_endpoint)
    objects = open_objects("s3://f2f/p", endpoint_url=s3_endpoint)
    objects.put(f"{JOB}/edited.png", b"the edit", "image/png")
    url = objects.presigned_url(f"{JOB}/edited.png", 300)
    assert url is not None and url.startswith(f"{s3_endpoint}/f2f/p/{JOB}/edited.png?")
    with urllib.request.urlopen(url, timeout=10) as response:  # a plain GET: the URL carries the signature
        assert response.read() == b"the edit"
    unsigned = url.partition("?")[0]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(unsigned.replace("edited.png", "nothing.png"), timeout=10)
    assert info.value.code in (403, 404)


def test_the_endpoint_comes_from_the_standard_variable(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _bucket(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    objects = open_objects("s3://f2f")
    objects.check("jobs.objects")
    objects.put(f"{JOB}/source.png", b"src")
    assert open_objects("s3://f2f", endpoint_url=s3_endpoint).get(f"{JOB}/source.png") == b"src"


def test_a_missing_bucket_is_one_line_at_start_naming_the_field_and_url(s3_endpoint: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        open_objects("s3://no-such-bucket/x", endpoint_url=s3_endpoint).check("jobs.objects")
    assert (info.value.field, info.value.value) == ("jobs.objects", "s3://no-such-bucket/x")
    assert s3_endpoint in info.value.rule and "\n" not in str(info.value)


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_an_unreachable_endpoint_is_refused_at_start_and_unavailable_at_run_time(s3_endpoint: str) -> None:
    down = _closed_port()
    objects = open_objects("s3://f2f/x", endpoint_url=down)
    with pytest.raises(InvalidConfig) as info:
        objects.check("jobs.objects")
    assert down in info.value.rule
    with pytest.raises(ObjectStoreUnavailable) as unavailable:
        objects.put(f"{JOB}/edited.png", b"png")
    assert unavailable.value.retry_after_s > 0 and "s3://f2f/x" in str(unavailable.value)


def test_expiry_is_a_lifecycle_rule_for_the_prefix_that_keeps_the_buckets_other_rules(s3_endpoint: str) -> None:
    _bucket(s3_endpoint)
    objects = open_objects("s3://f2f/deploy-a", endpoint_url=s3_endpoint)
    assert isinstance(objects, S3Objects)
    theirs = {"ID": "theirs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}}
    objects.client.put_bucket_lifecycle_configuration(Bucket="f2f", LifecycleConfiguration={"Rules": [theirs]})
    objects.expire_after(86400 * 1.5)
    objects.expire_after(86400 * 1.5)  # once more: the rule is replaced, not added again
    rules = {rule["ID"]: rule for rule in objects.client.get_bucket_lifecycle_configuration(Bucket="f2f")["Rules"]}
    assert set(rules) == {"theirs", "f2f-expiry:deploy-a/"}
    ours = rules["f2f-expiry:deploy-a/"]
    assert ours["Expiration"]["Days"] == 2 and ours["Filter"]["Prefix"] == "deploy-a/"
