"""Forms: bad input is shown next to the field it concerns, and nothing is saved."""

from __future__ import annotations

import pytest

from apps.datasets.models import Dataset
from apps.tickets.models import Ticket
from apps.tickets.params import TRAIN_DEFAULTS

GOOD = {"name": "events", "id_column": "user_id", "label_column": "", "description": "", "visibility": "schema"}


@pytest.mark.parametrize(
    ("content", "form", "message", "field"),
    [
        ("user_id,x\nu1,1\nu1,2\n", {}, "has duplicates, e.g. &#x27;u1&#x27;", "id_column"),
        ("", {}, "is empty", "uri"),
        ("id,x\nu1,1\n", {}, "id column &#x27;user_id&#x27; is not in the file", "id_column"),
        (b"user_id,x\nu1,caf\xe9\n", {}, "is not UTF-8", "uri"),
        ("user_id,x\nu1,1\nu2\n", {}, "line 3: expected 2 fields, found 1", "uri"),
        (
            "user_id,y\nu1,1\nu2,\n",
            {"label_column": "y"},
            "label column &#x27;y&#x27; has 1 empty values",
            "label_column",
        ),
    ],
    ids=["duplicate-ids", "empty", "no-id-column", "not-utf8", "ragged", "bad-label"],
)
def test_a_bad_file_shows_its_error_in_the_form(world, browser_client, data_root, content, form, message, field):
    path = data_root / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = Dataset.objects.count()
    r = browser_client("dave").post("/w/acme/datasets/new", {**GOOD, "uri": str(path), **form})
    assert r.status_code == 400
    body = r.content.decode()
    assert message in body
    # The message sits under the field it names.
    assert f'id="id_{field}_error"' in body
    assert 'value="events"' in body  # what the user typed is kept
    assert Dataset.objects.count() == before


def test_a_path_outside_the_data_roots_is_refused(world, browser_client, tmp_path):
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("user_id\nu1\n")
    r = browser_client("dave").post("/w/acme/datasets/new", {**GOOD, "uri": str(outside)})
    assert r.status_code == 400
    assert "is outside this workspace" in r.content.decode()


def test_missing_fields_are_named(world, browser_client):
    r = browser_client("dave").post(
        "/w/acme/datasets/new", {"name": "", "uri": "", "id_column": "", "visibility": "schema"}
    )
    assert r.status_code == 400
    assert r.content.decode().count("This field is required.") == 3


def test_a_good_file_registers_and_shows_its_stats(world, browser_client, data_root):
    (data_root / "good.csv").write_text("user_id,score\nu1,0.5\nu2,1.5\nu3,2.5\n")
    client = browser_client("dave")
    r = client.post("/w/acme/datasets/new", {**GOOD, "uri": str(data_root / "good.csv")})
    assert r.status_code == 302
    ds = Dataset.objects.get(name="events")
    assert r["Location"] == f"/w/acme/datasets/{ds.pk}/"
    body = client.get(r["Location"]).content.decode()
    assert "Registered events: 3 rows." in body
    assert "score" in body and "1.5" in body  # mean


def test_the_form_suggests_only_files_in_the_workspaces_folder(world, browser_client, data_root, tmp_path):
    globex = data_root.parent / "globex"
    (globex / "secret.csv").write_text("user_id\nu1\n")
    (data_root / "peek.csv").symlink_to(globex / "secret.csv")  # a link out is not offered either
    body = browser_client("dave").get("/w/acme/datasets/new").content.decode()
    assert f'<option value="{data_root / "labels.csv"}">' in body
    assert "secret.csv" not in body and "peek.csv" not in body
    assert f"<code>{data_root}</code>" in body


# -- tickets -----------------------------------------------------------------------


def _proposal(w, **over):
    data = {
        "partner": str(w["partner"].pk),
        "local_dataset": str(w["labels"].pk),
        "remote_dataset": str(w["remote"].pk),
        "kind": "psi_vertical_nn",
        "name": "",
        "comment": "",
        "share_metrics": "on",
        "psi_protocol": "auto",
        "train_bottom_layers": "64, 32",
        "train_top_layers": "16",
        "train_activation": "relu",
        "train_optimizer": "adam",
        "train_learning_rate": "0.001",
        "train_l2_regularization": "12",
        "train_batch_size": "256",
        "train_epochs": "5",
        "train_validation_fraction": "0.2",
        "train_early_stopping_patience": "2",
        "train_early_stopping_fraction": "0.1",
        "train_seed": "42",
        "train_gradient_noise_stddev": "0",
    }
    return {**data, **over}


def test_the_proposal_form_is_filled_with_defaults(world, browser_client):
    body = browser_client("dave").get("/w/acme/tickets/new").content.decode()
    assert f'name="train_epochs" value="{TRAIN_DEFAULTS["epochs"]}"' in body
    assert 'name="train_bottom_layers" value="32"' in body and 'name="train_top_layers" value="8"' in body
    assert 'name="train_early_stopping_fraction" value="0.1"' in body
    assert "Beta Bank: beta_features" in body


def test_a_proposal_with_defaults_is_sent(world, browser_client):
    r = browser_client("dave").post("/w/acme/tickets/new", _proposal(world, epochs="7", train_epochs="7"))
    assert r.status_code == 302
    ticket = Ticket.objects.exclude(pk__in=[world["sent"].pk, world["received"].pk]).get()
    assert ticket.status == "proposed" and ticket.role == "leader"
    assert ticket.params["train"]["epochs"] == 7 and ticket.params["train"]["bottom_layers"] == [64, 32]


@pytest.mark.parametrize(
    ("over", "field", "message"),
    [
        ({"train_epochs": "0"}, "train_epochs", "must be an integer from 1 to 1000"),
        ({"train_learning_rate": "50"}, "train_learning_rate", "must be a number from"),
        ({"train_bottom_layers": "64, x"}, "train_bottom_layers", "Enter whole numbers separated by commas"),
        ({"train_top_layers": ""}, "train_top_layers", "This field is required."),
        ({"local_dataset": "", "remote_dataset": ""}, "local_dataset", "This field is required."),
    ],
    ids=["epochs", "learning-rate", "layers", "empty-layers", "no-dataset"],
)
def test_bad_parameters_are_shown_next_to_their_field(world, browser_client, over, field, message):
    before = Ticket.objects.count()
    r = browser_client("dave").post("/w/acme/tickets/new", _proposal(world, **over))
    assert r.status_code == 400
    body = r.content.decode()
    assert f'id="id_{field}_error"' in body and message in body
    assert Ticket.objects.count() == before


def test_both_sides_labelled_is_explained(world, browser_client):
    world["remote"].has_label = True
    world["remote"].save()
    r = browser_client("dave").post("/w/acme/tickets/new", _proposal(world))
    assert r.status_code == 400
    assert "both datasets have a label column" in r.content.decode()


def test_no_connected_partner_says_what_to_do(world, browser_client):
    world["partner"].status = "suspended"
    world["partner"].save()
    body = browser_client("erin").get("/w/acme/tickets/new").content.decode()
    assert "No connected partner" in body and "Invite one" in body


def test_a_boosted_tree_proposal_takes_its_parameters_and_defaults(world, browser_client):
    body = browser_client("dave").get("/w/acme/tickets/new").content.decode()
    assert 'name="tree_num_trees" value="100"' in body and 'value="psi_vertical_tree"' in body
    over = {"kind": "vertical_tree", "tree_max_depth": "3", "tree_he_scheme": "paillier", "tree_key_bits": "1024"}
    r = browser_client("dave").post("/w/acme/tickets/new", _proposal(world, **over))
    assert r.status_code == 302
    ticket = Ticket.objects.exclude(pk__in=[world["sent"].pk, world["received"].pk]).get()
    assert ticket.kind == "vertical_tree" and "psi" not in ticket.params and "train" not in ticket.params
    tree = ticket.params["tree"]
    assert (tree["max_depth"], tree["he_scheme"], tree["key_bits"]) == (3, "paillier", 1024)
    assert (tree["num_trees"], tree["max_bin"], tree["early_stopping_rounds"]) == (100, 32, 10)


def test_a_bad_tree_parameter_is_shown_next_to_its_field(world, browser_client):
    r = browser_client("dave").post("/w/acme/tickets/new", _proposal(world, kind="vertical_tree", tree_max_bin="500"))
    assert r.status_code == 400
    body = r.content.decode()
    assert 'id="id_tree_max_bin_error"' in body and "must be an integer from 2 to 127" in body


def test_a_partitioned_psi_proposal_takes_its_partition_count(world, browser_client):
    client = browser_client("dave")
    assert 'name="psi_partitions" value="1"' in client.get("/w/acme/tickets/new").content.decode()
    r = client.post("/w/acme/tickets/new", _proposal(world, kind="psi", psi_partitions="4"))
    assert r.status_code == 302
    ticket = Ticket.objects.exclude(pk__in=[world["sent"].pk, world["received"].pk]).get()
    assert ticket.params["psi"]["partitions"] == 4 and "train" not in ticket.params
    assert "PSI partitions" in client.get(r["Location"]).content.decode()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"kind": "psi", "psi_partitions": "0"}, "must be an integer from 1 to 256"),
        ({"kind": "psi", "psi_partitions": "257"}, "must be an integer from 1 to 256"),
        ({"kind": "psi", "psi_partitions": "abc"}, "Enter a whole number."),
        ({"kind": "psi_vertical_nn", "psi_partitions": "2"}, "more than 1 partition runs only for `psi` jobs"),
    ],
    ids=["zero", "too-many", "not-a-number", "training-kind"],
)
def test_a_bad_partition_count_is_shown_next_to_its_field(world, browser_client, over, message):
    before = Ticket.objects.count()
    r = browser_client("dave").post("/w/acme/tickets/new", _proposal(world, **over))
    assert r.status_code == 400
    body = r.content.decode()
    assert 'id="id_psi_partitions_error"' in body and message in body
    assert Ticket.objects.count() == before
