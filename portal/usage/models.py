"""Usage metering tables: collector source bindings, rollups and the deltas folded into them, GPU-hour accrual, and
budget state and alerts. The raw event table `usage_event` is partitioned by month and created by SQL in the
migrations (Django cannot declare partitioned tables); only `portal.usage.store` reads and writes it."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from portal.core.models import TimestampedModel

RAW_EVENT_TABLE = "usage_event"
MONEY_DIGITS = 24
MONEY_PLACES = 12


class CollectorSource(TimestampedModel):
    """An event source a collector token may send: `source` values starting with `source_prefix`."""

    token = models.ForeignKey("tokens.ApiToken", on_delete=models.CASCADE, related_name="usage_sources")
    source_prefix = models.CharField(max_length=255, help_text="e.g. aigw://prod-eu1/ ; '*' allows every source")

    class Meta:
        ordering = ["token_id", "source_prefix"]
        constraints = [
            models.UniqueConstraint(fields=["token", "source_prefix"], name="one_binding_per_token_and_prefix"),
            models.CheckConstraint(condition=~Q(source_prefix=""), name="collector_source_prefix_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.token_id} may send {self.source_prefix}"


class _Rollup(models.Model):
    team = models.ForeignKey("tenancy.Team", on_delete=models.CASCADE, related_name="+")
    model_id = models.BigIntegerField(help_text="catalog model id")
    model_slug = models.CharField(max_length=63)
    credential_id = models.BigIntegerField()
    client_id = models.CharField(max_length=200)
    requests = models.BigIntegerField(default=0)
    failed_requests = models.BigIntegerField(default=0, help_text="status code 400 or above")
    unmetered_requests = models.BigIntegerField(default=0, help_text="no token counts (failed or cut off)")
    input_tokens = models.BigIntegerField(default=0, help_text="all input, cached and cache writes included")
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)

    class Meta:
        abstract = True


class UsageHourly(_Rollup):
    """Usage and cost of one team, model and credential in one UTC hour; the sum of its folded deltas."""

    hour = models.DateTimeField()

    class Meta:
        verbose_name = "hourly usage"
        verbose_name_plural = "hourly usage"
        db_table = "usage_hourly"
        constraints = [
            models.UniqueConstraint(
                fields=["team", "hour", "model_id", "credential_id"], name="one_hourly_rollup_per_bucket"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.team_id} {self.hour:%Y-%m-%dT%H} {self.model_slug} {self.client_id}"


class UsageDaily(_Rollup):
    """Usage and cost of one team, model and credential in one UTC day; the sum of its folded deltas."""

    day = models.DateField()

    class Meta:
        verbose_name = "daily usage"
        verbose_name_plural = "daily usage"
        db_table = "usage_daily"
        constraints = [
            models.UniqueConstraint(
                fields=["team", "day", "model_id", "credential_id"], name="one_daily_rollup_per_bucket"
            ),
        ]
        # Platform-wide reports (every team over a range of days) read by day alone.
        indexes = [models.Index(fields=["day"], name="usage_daily_day")]

    def __str__(self) -> str:
        return f"{self.team_id} {self.day} {self.model_slug} {self.client_id}"


class UsageRollupDelta(models.Model):
    """What a batch of stored events (or a re-rating, or a quarantine release) adds to one rollup bucket: written
    in the transaction that changed the raw events, folded into the hourly and daily rollups and deleted by the
    compactor in one transaction, so each change is counted exactly once and raw events are never read again."""

    hour = models.DateTimeField()
    team_id = models.BigIntegerField()
    model_id = models.BigIntegerField()
    credential_id = models.BigIntegerField()
    deployment_id = models.BigIntegerField(null=True)
    model_slug = models.CharField(max_length=63, blank=True, help_text="label; empty when the writer did not know it")
    client_id = models.CharField(max_length=200, blank=True, help_text="label; empty when the writer did not know it")
    requests = models.BigIntegerField(default=0)
    failed_requests = models.BigIntegerField(default=0)
    unmetered_requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_pico = models.DecimalField(max_digits=38, decimal_places=0, default=0, help_text="10^-12 currency units")
    last_event_at = models.DateTimeField(null=True)
    latency_buckets = ArrayField(models.BigIntegerField(), null=True, help_text="requests per LATENCY_BOUNDS_MS bucket")
    ttft_buckets = ArrayField(models.BigIntegerField(), null=True, help_text="requests per LATENCY_BOUNDS_MS bucket")

    class Meta:
        db_table = "usage_rollup_delta"

    def __str__(self) -> str:
        return f"{self.team_id} {self.hour:%Y-%m-%dT%H} +{self.requests}"


# Upper bounds (milliseconds) of the request-health histogram's buckets; a last, open bucket holds the rest. Fixed,
# so hours add up bucket by bucket and percentiles come from the rollup, never from raw events.
LATENCY_BOUNDS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000)


class UsageRequestHealth(models.Model):
    """Requests, errors (status 400 or above) and latency and time-to-first-token histograms of one team, catalog
    model and deployment (0: none, a managed model) in one UTC hour: every attributed request the gateway logged,
    those without token counts included; the sum of its folded deltas."""

    team = models.ForeignKey("tenancy.Team", on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    model_id = models.BigIntegerField()
    model_slug = models.CharField(max_length=63)
    deployment_id = models.BigIntegerField(default=0, help_text="0: no deployment (a managed model)")
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    latency_buckets = ArrayField(models.BigIntegerField(), default=list)
    ttft_buckets = ArrayField(models.BigIntegerField(), default=list)

    class Meta:
        verbose_name = "hourly request health"
        verbose_name_plural = "hourly request health"
        db_table = "usage_request_health"
        constraints = [
            models.UniqueConstraint(
                fields=["team", "hour", "model_id", "deployment_id"], name="one_request_health_per_bucket"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.team_id} {self.hour:%Y-%m-%dT%H} {self.model_slug} {self.deployment_id}"


class UsageSource(models.Model):
    """The event sources seen (a gateway's `source`), so each stored event carries a small id, not the text."""

    name = models.TextField(unique=True)

    class Meta:
        db_table = "usage_source"

    def __str__(self) -> str:
        return self.name


class UsagePriceSet(models.Model):
    """A set of catalog price ids that rated an event together; each stored event carries the set's id."""

    price_ids = ArrayField(models.BigIntegerField(), unique=True)

    class Meta:
        db_table = "usage_price_set"

    def __str__(self) -> str:
        return f"prices {self.price_ids}"


class QuarantinedEventDetail(models.Model):
    """What a quarantined event said that a rated one does not need to keep (the raw row is lean): its source, id,
    credential and model names as reported, so it can be listed and attributed again."""

    event_time = models.DateTimeField()
    event_key = models.UUIDField()
    source = models.TextField()
    event_id = models.CharField(max_length=200)
    client_id = models.CharField(max_length=200, blank=True)
    model_names = ArrayField(models.CharField(max_length=255), default=list)
    reason = models.CharField(max_length=40)
    received_at = models.DateTimeField()

    class Meta:
        db_table = "usage_quarantined_event"
        constraints = [models.UniqueConstraint(fields=["event_time", "event_key"], name="one_detail_per_event")]

    def __str__(self) -> str:
        return f"{self.source} {self.event_id} ({self.reason})"


class PriceRerate(models.Model):
    """A catalog price added with an effective date before its creation, and the re-rating it caused (once)."""

    price_id = models.BigIntegerField(unique=True)
    model_slug = models.CharField(max_length=63)
    since = models.DateTimeField()
    events_changed = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"price {self.price_id} of {self.model_slug}: {self.events_changed} events re-rated"


class GpuAccrualCursor(models.Model):
    """Where GPU-hour accrual of one deployment stopped, and the replicas observed then."""

    deployment_id = models.BigIntegerField(unique=True)
    sampled_at = models.DateTimeField()
    observed_replicas = models.PositiveIntegerField()

    class Meta:
        verbose_name = "GPU accrual cursor"
        verbose_name_plural = "GPU accrual cursors"

    def __str__(self) -> str:
        return f"deployment {self.deployment_id} at {self.sampled_at:%Y-%m-%dT%H:%M}"


class GpuUsage(models.Model):
    """GPUs held by one self-hosted deployment over an interval within one UTC hour, and their cost."""

    deployment_id = models.BigIntegerField()
    deployment_name = models.CharField(max_length=40)
    team = models.ForeignKey("tenancy.Team", on_delete=models.CASCADE, related_name="+")
    cluster_name = models.CharField(max_length=40)
    accelerator_type = models.CharField(max_length=64)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    replicas = models.PositiveIntegerField()
    gpus_per_replica = models.PositiveIntegerField()
    gpu_hours = models.DecimalField(max_digits=18, decimal_places=9)
    price_per_gpu_hour = models.DecimalField(max_digits=12, decimal_places=4)
    cost = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)

    class Meta:
        verbose_name = "GPU usage"
        verbose_name_plural = "GPU usage"
        ordering = ["started_at"]
        constraints = [
            models.UniqueConstraint(fields=["deployment_id", "started_at"], name="one_gpu_interval_per_start"),
            models.CheckConstraint(condition=Q(ended_at__gt=models.F("started_at")), name="gpu_interval_not_empty"),
        ]
        # Platform-wide reads (the cost API without a team, the console's overview and fleet) filter by time alone.
        indexes = [
            models.Index(fields=["team", "started_at"]),
            models.Index(fields=["started_at"], name="usage_gpu_started_at"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment_name} {self.started_at:%Y-%m-%dT%H:%M} {self.gpu_hours} GPU-h"


class GpuUsageDaily(models.Model):
    """GPU-hours and cost of one self-hosted deployment (as labelled when accrued) in one UTC day: the sum of its
    GpuUsage rows, added in the transaction that writes each of them, so reports over days never read the accrual."""

    day = models.DateField()
    deployment_id = models.BigIntegerField()
    deployment_name = models.CharField(max_length=40)
    team = models.ForeignKey("tenancy.Team", on_delete=models.CASCADE, related_name="+")
    cluster_name = models.CharField(max_length=40)
    accelerator_type = models.CharField(max_length=64)
    gpu_hours = models.DecimalField(max_digits=20, decimal_places=9)
    cost = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)

    class Meta:
        verbose_name = "daily GPU usage"
        verbose_name_plural = "daily GPU usage"
        db_table = "usage_gpu_daily"
        constraints = [
            # Every label a report groups by is part of the bucket, so each grouping sums exactly what GpuUsage would.
            models.UniqueConstraint(
                fields=["day", "deployment_id", "team", "deployment_name", "cluster_name", "accelerator_type"],
                name="one_gpu_daily_rollup_per_bucket",
            ),
        ]
        # Platform-wide reads go by day (the constraint's index); a team's and a deployment's by theirs.
        indexes = [
            models.Index(fields=["team", "day"], name="usage_gpu_daily_team_day"),
            models.Index(fields=["deployment_id", "day"], name="usage_gpu_daily_deployment_day"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment_name} {self.day} {self.gpu_hours} GPU-h"


class _Sums(models.Model):
    requests = models.BigIntegerField(default=0)
    failed_requests = models.BigIntegerField(default=0, help_text="status code 400 or above")
    unmetered_requests = models.BigIntegerField(default=0, help_text="no token counts (failed or cut off)")
    input_tokens = models.BigIntegerField(default=0, help_text="all input, cached and cache writes included")
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)

    class Meta:
        abstract = True


class UsageTeamDaily(_Sums):
    """One team's whole day: its UsageDaily rows summed (tokens and their cost, added by the compactor in the
    transaction that adds them to UsageDaily) and its GpuUsageDaily rows summed (added by the GPU accrual in the
    transaction that adds them there). Reports over many teams and days (the cost API without a team, the console's
    overview) read one row per team and day here instead of one per team, model, key and day."""

    team = models.ForeignKey("tenancy.Team", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    gpu_hours = models.DecimalField(max_digits=20, decimal_places=9, default=0)
    gpu_cost = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)

    class Meta:
        verbose_name = "daily team usage"
        verbose_name_plural = "daily team usage"
        db_table = "usage_team_daily"
        constraints = [models.UniqueConstraint(fields=["team", "day"], name="one_team_daily_rollup_per_bucket")]
        indexes = [models.Index(fields=["day"], name="usage_team_daily_day")]

    def __str__(self) -> str:
        return f"{self.team_id} {self.day}"


class UsageModelDaily(_Sums):
    """One catalog model's whole day across every team: its UsageDaily rows summed, added by the compactor in the
    transaction that adds them to UsageDaily. The platform-wide "by model" report reads it."""

    model_id = models.BigIntegerField(help_text="catalog model id")
    model_slug = models.CharField(max_length=63)
    day = models.DateField()

    class Meta:
        verbose_name = "daily model usage"
        verbose_name_plural = "daily model usage"
        db_table = "usage_model_daily"
        constraints = [models.UniqueConstraint(fields=["day", "model_id"], name="one_model_daily_rollup_per_bucket")]

    def __str__(self) -> str:
        return f"{self.model_slug} {self.day}"


class TeamBudgetSettings(TimestampedModel):
    """A team's own alert thresholds (percent of the monthly budget in its quota)."""

    team = models.OneToOneField("tenancy.Team", on_delete=models.CASCADE, related_name="budget_settings")
    thresholds = ArrayField(models.PositiveSmallIntegerField(), default=list)

    class Meta:
        verbose_name = "team budget settings"
        verbose_name_plural = "team budget settings"
        constraints = [
            models.CheckConstraint(condition=Q(thresholds__len__gte=1), name="budget_has_a_threshold"),
        ]

    def __str__(self) -> str:
        return f"thresholds of {self.team_id}: {self.thresholds}"


class BudgetState(TimestampedModel):
    """A team's budget in one calendar month: its last evaluation, and when this month's spend brought its policy's
    enforcement, when an admin lifted it, when the month's end released it. What is enforced now is the gateway's
    to hold (gateway TeamGatewayPolicy.budget_enforcement), not this row's."""

    team = models.ForeignKey("tenancy.Team", on_delete=models.CASCADE, related_name="budget_states")
    month = models.DateField(help_text="first day of the month (UTC)")
    budget = models.DecimalField(max_digits=14, decimal_places=2)
    spend = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)
    projected_spend = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=0)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    # When this month's spend brought the policy's enforcement (the latest time, if it came back after a release).
    enforced_at = models.DateTimeField(null=True, blank=True)
    # An early lift by a platform admin holds for the rest of the month; the month's end releases the rest.
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    lift_reason = models.CharField(max_length=500, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-month", "team_id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "month"], name="one_budget_state_per_team_and_month"),
        ]

    def __str__(self) -> str:
        return f"{self.team_id} {self.month:%Y-%m}"


class BudgetAlert(models.Model):
    """A threshold crossed by a team in a month: recorded once, delivered to the webhook."""

    team = models.ForeignKey("tenancy.Team", on_delete=models.CASCADE, related_name="budget_alerts")
    month = models.DateField()
    threshold = models.PositiveSmallIntegerField(help_text="percent of the monthly budget")
    spend = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    budget = models.DecimalField(max_digits=14, decimal_places=2)
    projected_spend = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    action = models.CharField(max_length=10, blank=True, help_text="policy applied with this alert, if any")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_attempts = models.PositiveIntegerField(default=0)
    last_delivery_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "month", "threshold"], name="one_alert_per_team_month_threshold"),
        ]

    def __str__(self) -> str:
        return f"{self.team_id} {self.month:%Y-%m} {self.threshold}%"
