"""The models and the template describe the same tables, so the schema cannot drift."""
from chalicelib.platform.config import TABLE_LOGICAL_IDS, table_env_var
from chalicelib.platform.models import MODELS
from chalicelib.platform.template import load_template, resources
from pynamodb.indexes import GlobalSecondaryIndex, LocalSecondaryIndex


def test_every_model_has_its_table_in_the_template():
    tables = resources(load_template(), "AWS::DynamoDB::Table")
    assert set(MODELS.values()) == set(tables) == set(TABLE_LOGICAL_IDS)


def test_model_keys_match_the_template_keys():
    tables = resources(load_template(), "AWS::DynamoDB::Table")
    for model, logical_id in MODELS.items():
        schema = {key["AttributeName"]: key["KeyType"] for key in tables[logical_id]["KeySchema"]}
        declared = {attr.attr_name: ("HASH" if attr.is_hash_key else "RANGE")
                    for attr in model.get_attributes().values() if attr.is_hash_key or attr.is_range_key}
        assert declared == schema, logical_id


def test_model_indexes_match_the_template_indexes():
    tables = resources(load_template(), "AWS::DynamoDB::Table")
    for model, logical_id in MODELS.items():
        for kind, base in (("LocalSecondaryIndexes", LocalSecondaryIndex), ("GlobalSecondaryIndexes", GlobalSecondaryIndex)):
            in_template = {index["IndexName"]: index for index in tables[logical_id].get(kind, [])}
            in_model = {index.Meta.index_name: index for index in model._indexes.values() if isinstance(index, base)}
            assert set(in_model) == set(in_template), (logical_id, kind)
            for name, index in in_model.items():
                keys = {key["AttributeName"]: key["KeyType"] for key in in_template[name]["KeySchema"]}
                declared = {attr.attr_name: ("HASH" if attr.is_hash_key else "RANGE")
                            for attr in index.Meta.attributes.values() if attr.is_hash_key or attr.is_range_key}
                assert declared == keys, (logical_id, name)
                projection = in_template[name]["Projection"]
                assert projection["ProjectionType"] == index.Meta.projection.projection_type, (logical_id, name)
                assert set(projection.get("NonKeyAttributes", [])) == set(
                    getattr(index.Meta.projection, "non_key_attributes", None) or []), (logical_id, name)


def test_functions_get_every_table_name_from_the_template():
    variables = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    for logical_id in TABLE_LOGICAL_IDS:
        assert variables[table_env_var(logical_id)] == {"Ref": logical_id}
