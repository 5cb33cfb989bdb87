"""Query parameters and bodies: bad values are 400s naming the field."""
import pytest

from chalicelib.platform.errors import InvalidRequest, PayloadTooLarge
from chalicelib.platform.web import MAX_BODY_BYTES, MAX_JSON_DEPTH, bool_param, foreign_error_body, page_params, parse_json_body


def test_page_defaults():
    assert page_params({}) == (0, 100)
    assert page_params({"page": "2", "size": "5"}) == (2, 5)


@pytest.mark.parametrize("params, field", [({"page": "-1"}, "page"), ({"page": "x"}, "page"),
                                           ({"size": "0"}, "size"), ({"size": "101"}, "size"),
                                           ({"size": "1.5"}, "size")])
def test_out_of_range_paging_is_rejected(params, field):
    with pytest.raises(InvalidRequest) as caught:
        page_params(params)
    assert caught.value.field == field


def test_immediate_accepts_true_and_false_only():
    assert bool_param({"immediate": "TRUE"}, "immediate") is True
    assert bool_param({}, "immediate") is False
    with pytest.raises(InvalidRequest):
        bool_param({"immediate": "yes please"}, "immediate")


def test_malformed_json_names_the_body():
    with pytest.raises(InvalidRequest) as caught:
        parse_json_body(b"{oops")
    assert caught.value.field == "body"


def test_bodies_nested_past_the_limit_are_400_naming_the_body():
    at_limit = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert isinstance(parse_json_body(at_limit), list)
    for raw in (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
                b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1),
                b"[" * 100_000):  # past the decoder's own recursion limit, not even well-formed
        with pytest.raises(InvalidRequest) as caught:
            parse_json_body(raw)
        assert caught.value.field == "body"


def test_huge_bodies_are_refused():
    with pytest.raises(PayloadTooLarge):
        parse_json_body(b" " * (MAX_BODY_BYTES + 1))


def test_foreign_error_bodies_are_reshaped_without_detail_for_500s():
    assert foreign_error_body(405, {"Code": "MethodNotAllowedError", "Message": "Unsupported method: PATCH"}) == {
        "code": "MethodNotAllowed", "message": "Unsupported method: PATCH"}
    assert foreign_error_body(500, {"Code": "x", "Message": "Traceback..."})["code"] == "InternalError"
    assert "Traceback" not in str(foreign_error_body(500, {"Message": "Traceback"}))
