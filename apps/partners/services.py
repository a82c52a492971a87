"""Partner settings: approval policies, suspension. (Handshake: apps.peer.handshake.)"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from apps.audit.services import record
from apps.core.errors import ServiceError
from apps.partners.choices import PROMOTION_POLICY, PartnerStatus, Policy
from apps.partners.models import Partner
from apps.tickets.choices import JobKind


@transaction.atomic
def set_policies(partner: Partner, policies: Any, *, acting_user: Any = None, source: str = "api") -> Partner:
    if not isinstance(policies, dict):
        raise ServiceError("must be an object mapping job kind to policy", field="policies")
    for kind, policy in policies.items():
        if kind not in JobKind.values and kind != PROMOTION_POLICY:
            known = ", ".join([*JobKind.values, PROMOTION_POLICY])
            raise ServiceError(f"unknown job kind {kind!r} (known: {known})", field="policies")
        if policy not in Policy.values:
            raise ServiceError(
                f"unknown policy {policy!r} for {kind} (known: {', '.join(Policy.values)})", field="policies"
            )
    partner.policies = {**partner.policies, **policies}
    partner.save(update_fields=["policies", "updated_at"])
    record(
        partner.workspace,
        "partner.policies",
        partner,
        actor=acting_user,
        source=source,
        data={"policies": partner.policies},
    )
    return partner


@transaction.atomic
def set_partner_status(partner: Partner, status: str, *, acting_user: Any = None, source: str = "api") -> Partner:
    allowed: dict[str, set[str]] = {
        PartnerStatus.CONNECTED: {PartnerStatus.SUSPENDED},
        PartnerStatus.SUSPENDED: {PartnerStatus.CONNECTED},
    }
    if status not in allowed.get(partner.status, set()):
        raise ServiceError(f"a {partner.status} partner cannot become {status}")
    if Partner.objects.filter(pk=partner.pk, status=partner.status).update(status=status) != 1:
        raise ServiceError("the partner changed meanwhile; reload and try again")
    record(
        partner.workspace, f"partner.{status}", partner, actor=acting_user, source=source, data={"from": partner.status}
    )
    partner.status = status
    return partner
