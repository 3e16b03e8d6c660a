"""`fmnist remote check`'s diagnosis: the exception a probe raised, read as one problem and what to check.

The faults themselves, against real servers, are in test_remote_servers.py; here the exceptions botocore and
s3fs raise are built directly, so that a message that happens to hold a code (a port such as 34037) is tested
every time, not only when the kernel hands out such a port.
"""

import errno

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from fmnist.tools import remote


def s3fs_error(code: str, message: str) -> OSError:
    """What s3fs raises for a botocore ClientError: its own exception, the ClientError as the cause."""
    error = PermissionError(errno.EACCES, message) if code != "NoSuchBucket" else FileNotFoundError(message)
    error.__cause__ = ClientError({"Error": {"Code": code, "Message": message}}, "ListObjectsV2")
    return error


@pytest.mark.parametrize("port", [34037, 40300, 9000])
def test_an_unreachable_endpoint_is_unreachable_whatever_digits_its_port_has(port):
    endpoint = f"http://127.0.0.1:{port}"
    line = remote.diagnose(EndpointConnectionError(endpoint_url=f"{endpoint}/bucket"), "s3", endpoint)
    assert line.startswith(f"cannot reach {endpoint} (Could not connect") and "check endpointurl" in line


@pytest.mark.parametrize("code", ["SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"])
def test_a_refused_signature_or_key_names_its_code_and_the_credentials(code):
    line = remote.diagnose(s3fs_error(code, "denied"), "s3", "http://127.0.0.1:34037")
    assert line.startswith(f"the credentials were refused ({code}); check AWS_ACCESS_KEY_ID")


def test_a_bare_403_from_a_head_request_is_refused_credentials():
    error = ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")
    assert remote.diagnose(error, "s3", "http://127.0.0.1:9000").startswith("the credentials were refused (403)")


def test_a_missing_bucket_says_so_even_on_a_port_with_403_in_it():
    line = remote.diagnose(s3fs_error("NoSuchBucket", "no bucket"), "s3", "http://127.0.0.1:34037")
    assert line.startswith("the bucket does not exist") and "url in .dvc/config" in line
