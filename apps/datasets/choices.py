from django.db import models


class DatasetFormat(models.TextChoices):
    CSV = "csv", "CSV"
    PARQUET = "parquet", "Parquet"


class Visibility(models.TextChoices):
    """What partners may see of a dataset granted to them."""

    NOTHING = "nothing", "Nothing"
    SCHEMA = "schema", "Name, schema and row count"
