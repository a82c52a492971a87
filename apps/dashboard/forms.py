"""Forms of the dashboard pages. They shape input; the service functions validate it."""

from __future__ import annotations

from django import forms

from apps.datasets.choices import Visibility
from apps.partners.choices import PROMOTION_POLICY, PROMOTION_POLICY_LABEL, Policy
from apps.tickets.choices import STREAM_KINDS, JobKind
from apps.tickets.params import (
    ACTIVATIONS,
    HE_SCHEMES,
    KEY_BITS,
    KIND_GROUPS,
    OPTIMIZERS,
    PSI_DEFAULTS,
    PSI_PROTOCOLS,
    STREAM_DEFAULTS,
    TRAIN_DEFAULTS,
    TREE_DEFAULTS,
    TREE_OBJECTIVES,
)


class AcceptForm(forms.Form):
    code = forms.CharField(
        label="Invitation code",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "autocomplete": "off"}),
        help_text="Paste the code the other organisation's admin sent you.",
    )
    name = forms.CharField(
        max_length=120,
        required=False,
        label="Partner name",
        help_text="How the partner appears here, e.g. “Alpha Ads”. Optional: defaults to the name the partner gave its workspace.",
    )


class PolicyForm(forms.Form):
    """One approval policy per job kind."""

    def __init__(self, *args, partner=None, **kwargs):
        super().__init__(*args, **kwargs)
        for kind, label in JobKind.choices:
            self.fields[kind] = forms.ChoiceField(
                label=label,
                choices=Policy.choices,
                initial=partner.policy_for(kind) if partner else Policy.MANUAL,
            )
        self.fields[PROMOTION_POLICY] = forms.ChoiceField(
            label=PROMOTION_POLICY_LABEL,
            choices=Policy.choices,
            initial=partner.policy_for(PROMOTION_POLICY) if partner else Policy.ALWAYS_ALLOW,
            help_text="When the partner asks to promote a model version both sides hold.",
        )


class DatasetForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="Unique in this workspace, e.g. users_labels.")
    uri = forms.CharField(
        max_length=1024,
        label="File path",
        help_text="A CSV or Parquet file under one of this installation's data roots.",
        widget=forms.TextInput(attrs={"list": "data-files", "spellcheck": "false", "autocomplete": "off"}),
    )
    id_column = forms.CharField(max_length=120, label="ID column", help_text="Unique per row; used to align users.")
    label_column = forms.CharField(
        max_length=120, required=False, label="Label column", help_text="Only on the side that holds the labels."
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    visibility = forms.ChoiceField(
        choices=Visibility.choices,
        initial=Visibility.SCHEMA,
        label="What partners you grant it to may see",
    )


class GrantForm(forms.Form):
    partner = forms.UUIDField(widget=forms.Select)

    def __init__(self, *args, partners=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["partner"].widget.choices = [(str(p.pk), p.name) for p in partners]


class DecisionForm(forms.Form):
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


def _layers_text(value: list[int]) -> str:
    return ", ".join(str(v) for v in value)


class TicketForm(forms.Form):
    """A proposal: whom, on which data, what to run, with which parameters."""

    partner = forms.ChoiceField(help_text="Only connected partners can receive proposals.")
    local_dataset = forms.ChoiceField(label="Your dataset")
    remote_dataset = forms.ChoiceField(
        label="The partner's dataset", help_text="Datasets the partner has granted to you."
    )
    kind = forms.ChoiceField(label="Job", choices=JobKind.choices, initial=JobKind.PSI_VERTICAL_NN)
    name = forms.CharField(max_length=200, required=False, help_text="Optional; a name is made from the datasets.")
    comment = forms.CharField(required=False, label="Note to the partner", widget=forms.Textarea(attrs={"rows": 2}))
    share_metrics = forms.BooleanField(required=False, initial=True, label="Share training metrics with the partner")
    psi_protocol = forms.ChoiceField(
        label="PSI protocol", choices=[(p, p.upper() if p != "auto" else "Automatic") for p in PSI_PROTOCOLS]
    )
    psi_partitions = forms.IntegerField(
        label="Partitions",
        required=False,
        initial=PSI_DEFAULTS["partitions"],
        help_text="1 to 256; more than 1 splits the ids by a keyed hash, one PSI pair per partition (PSI jobs only)",
    )
    train_bottom_layers = forms.CharField(
        label="Bottom layers", initial=_layers_text(TRAIN_DEFAULTS["bottom_layers"]), help_text="Sizes, comma-separated"
    )
    train_top_layers = forms.CharField(
        label="Top layers", initial=_layers_text(TRAIN_DEFAULTS["top_layers"]), help_text="Leader only"
    )
    train_activation = forms.ChoiceField(
        label="Activation", choices=[(a, a) for a in ACTIVATIONS], initial=TRAIN_DEFAULTS["activation"]
    )
    train_optimizer = forms.ChoiceField(
        label="Optimizer", choices=[(o, o) for o in OPTIMIZERS], initial=TRAIN_DEFAULTS["optimizer"]
    )
    train_learning_rate = forms.FloatField(label="Learning rate", initial=TRAIN_DEFAULTS["learning_rate"])
    train_l2_regularization = forms.FloatField(
        label="L2 regularisation",
        initial=TRAIN_DEFAULTS["l2_regularization"],
        help_text="Weight of Σw² against the summed loss; 0 = off",
    )
    train_batch_size = forms.IntegerField(label="Batch size", initial=TRAIN_DEFAULTS["batch_size"])
    train_epochs = forms.IntegerField(label="Epochs", initial=TRAIN_DEFAULTS["epochs"])
    train_validation_fraction = forms.FloatField(
        label="Validation fraction", initial=TRAIN_DEFAULTS["validation_fraction"]
    )
    train_early_stopping_patience = forms.IntegerField(
        label="Early-stopping patience", initial=TRAIN_DEFAULTS["early_stopping_patience"], help_text="Epochs; 0 = off"
    )
    train_early_stopping_fraction = forms.FloatField(
        label="Early-stopping fraction",
        initial=TRAIN_DEFAULTS["early_stopping_fraction"],
        help_text="Rows set aside to choose the epoch kept",
    )
    train_seed = forms.IntegerField(label="Seed", initial=TRAIN_DEFAULTS["seed"])
    train_gradient_noise_stddev = forms.FloatField(
        label="Gradient noise (std dev)", initial=TRAIN_DEFAULTS["gradient_noise_stddev"]
    )

    # The form offers the common training keys; the API takes every key of apps.tickets.params.
    TRAIN_FIELDS: list[str] = []  # set below the class: the train_* fields declared here

    tree_num_trees = forms.IntegerField(label="Trees", initial=TREE_DEFAULTS["num_trees"])
    tree_max_depth = forms.IntegerField(label="Max depth", initial=TREE_DEFAULTS["max_depth"])
    tree_learning_rate = forms.FloatField(label="Learning rate", initial=TREE_DEFAULTS["learning_rate"])
    tree_max_bin = forms.IntegerField(label="Bins per feature", initial=TREE_DEFAULTS["max_bin"])
    tree_min_child_weight = forms.FloatField(label="Min child weight", initial=TREE_DEFAULTS["min_child_weight"])
    tree_reg_lambda = forms.FloatField(label="L2 regularisation (lambda)", initial=TREE_DEFAULTS["reg_lambda"])
    tree_gamma = forms.FloatField(label="Min split gain (gamma)", initial=TREE_DEFAULTS["gamma"])
    tree_subsample = forms.FloatField(label="Row subsample", initial=TREE_DEFAULTS["subsample"])
    tree_colsample_bytree = forms.FloatField(label="Column subsample", initial=TREE_DEFAULTS["colsample_bytree"])
    tree_validation_fraction = forms.FloatField(
        label="Validation fraction", initial=TREE_DEFAULTS["validation_fraction"]
    )
    tree_early_stopping_rounds = forms.IntegerField(
        label="Early-stopping rounds", initial=TREE_DEFAULTS["early_stopping_rounds"], help_text="Trees; 0 = off"
    )
    tree_seed = forms.IntegerField(label="Seed", initial=TREE_DEFAULTS["seed"])
    tree_objective = forms.ChoiceField(
        label="Objective", choices=[(o, o) for o in TREE_OBJECTIVES], initial=TREE_DEFAULTS["objective"]
    )
    tree_he_scheme = forms.ChoiceField(
        label="Encryption",
        choices=[(s, {"ou": "Okamoto-Uchiyama", "paillier": "Paillier"}.get(s, s)) for s in HE_SCHEMES],
        initial=TREE_DEFAULTS["he_scheme"],
    )
    tree_key_bits = forms.TypedChoiceField(
        label="Key bits", choices=[(b, str(b)) for b in KEY_BITS], coerce=int, initial=TREE_DEFAULTS["key_bits"]
    )

    TREE_FIELDS = [f"tree_{k}" for k in TREE_DEFAULTS]

    # Stream kinds: where this side's events arrive (kept here), and the join's shared parameters.
    stream_source_kind = forms.ChoiceField(
        label="Your events arrive in",
        choices=[("folder", "a folder of part files"), ("nats", "a NATS subject")],
        required=False,
    )
    stream_source_location = forms.CharField(
        label="Folder or subject",
        required=False,
        help_text="A folder inside your data folder (e.g. events/clicks), or a JetStream subject",
    )
    stream_source_stream = forms.CharField(label="JetStream stream", required=False, help_text="NATS only")
    stream_max_delay_s = forms.FloatField(label="Max delay (s)", required=False, initial=STREAM_DEFAULTS["max_delay_s"])
    stream_block_size = forms.IntegerField(label="Block size", required=False, initial=STREAM_DEFAULTS["block_size"])
    stream_publish_every_blocks = forms.IntegerField(
        label="Publish every (blocks)", required=False, initial=STREAM_DEFAULTS["publish_every_blocks"]
    )
    stream_publish_every_minutes = forms.FloatField(
        label="…or every (minutes)", required=False, initial=STREAM_DEFAULTS["publish_every_minutes"]
    )

    def __init__(self, *args, partners=(), local_datasets=(), remote_datasets=(), **kwargs):
        super().__init__(*args, **kwargs)
        partner_field, local_field, remote_field = (
            self.fields["partner"],
            self.fields["local_dataset"],
            self.fields["remote_dataset"],
        )
        assert isinstance(partner_field, forms.ChoiceField)
        assert isinstance(local_field, forms.ChoiceField)
        assert isinstance(remote_field, forms.ChoiceField)
        partner_field.choices = [("", "Choose a partner…")] + [(str(p.pk), p.name) for p in partners]
        local_field.choices = [("", "Choose your dataset…")] + [
            (str(d.pk), f"{d.name}{' (labels)' if d.label_column else ''}") for d in local_datasets
        ]
        remote_field.choices = [("", "Choose the partner's dataset…")] + [
            (str(d.pk), f"{d.partner.name}: {d.name}{' (labels)' if d.has_label else ''}") for d in remote_datasets
        ]
        # Tree parameters are optional here: a blank one takes the ticket default.
        for name in self.TREE_FIELDS:
            self.fields[name].required = False
        # Let the page's script show only the chosen partner's datasets.
        self.remote_partner = {str(d.pk): str(d.partner_id) for d in remote_datasets}

    def clean(self):
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        for key in ("train_bottom_layers", "train_top_layers"):
            raw = data.get(key)
            if raw is None:
                continue
            try:
                data[key] = [int(part) for part in raw.replace(" ", "").split(",") if part]
            except ValueError:
                self.add_error(key, "Enter whole numbers separated by commas, e.g. 64, 32.")
        return data

    def params(self) -> dict:
        """The ticket's params in the shape apps.tickets.params validates."""
        d = self.cleaned_data
        groups = {
            "psi": {"protocol": d["psi_protocol"]}
            | ({} if d.get("psi_partitions") in (None, "") else {"partitions": d["psi_partitions"]}),
            "train": {name.removeprefix("train_"): d[name] for name in self.TRAIN_FIELDS},
            "tree": {
                key: TREE_DEFAULTS[key] if d.get(f"tree_{key}") in (None, "") else d[f"tree_{key}"]
                for key in TREE_DEFAULTS
            },
        }
        groups["stream"] = {
            key: d[f"stream_{key}"] for key in STREAM_DEFAULTS if d.get(f"stream_{key}") not in (None, "")
        }
        used = KIND_GROUPS.get(str(d.get("kind")), tuple(groups))
        return {"share_metrics": bool(d.get("share_metrics"))} | {g: v for g, v in groups.items() if g in used}

    def stream_source(self) -> dict | None:
        """This side's stream source (stream kinds only), as apps.tickets.sources checks it."""
        d = self.cleaned_data
        if d.get("kind") not in STREAM_KINDS:
            return None
        return source_from_post(d)

    @staticmethod
    def field_for(service_field: str | None) -> str | None:
        """Map a service error's field (params.train.epochs) to this form's (train_epochs)."""
        if not service_field:
            return None
        if service_field.startswith("params.train."):
            return "train_" + service_field.removeprefix("params.train.").split("[")[0]
        if service_field.startswith("params.tree."):
            return "tree_" + service_field.removeprefix("params.tree.")
        if service_field.startswith("params.psi.partitions"):
            return "psi_partitions"
        if service_field.startswith("params.psi"):
            return "psi_protocol"
        if service_field.startswith(("params.stream.", "stream_source.")):
            return service_field.removeprefix("params.").replace(".", "_")
        if service_field == "stream_source":
            return "stream_source_location"
        return {"params": None}.get(service_field, service_field)


TicketForm.TRAIN_FIELDS = [f"train_{k}" for k in TRAIN_DEFAULTS if f"train_{k}" in TicketForm.base_fields]


def source_from_post(data) -> dict:
    """A stream source from form fields `stream_source_kind`, `…_location` and `…_stream` (blank: none)."""
    source = {
        "kind": data.get("stream_source_kind") or "folder",
        "location": (data.get("stream_source_location") or "").strip(),
    }
    if (data.get("stream_source_stream") or "").strip():
        source["stream"] = data["stream_source_stream"].strip()
    return source if source["location"] else {}
