from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api import TenantViewSet
from apps.registry.api.serializers import (
    DecisionSerializer,
    ModelVersionSerializer,
    PredictRequestSerializer,
    PredictResponseSerializer,
)
from apps.registry.choices import Stage
from apps.registry.models import ModelVersion
from apps.registry.services import decide_promotion, request_promotion, set_stage
from apps.registry.serving import predict
from apps.workspaces.choices import Role


class ModelVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """This side's halves of trained models. Approvers promote and archive."""

    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.all()
    filterset_fields = ["stage", "ticket", "role"]
    action_roles = {
        "promote": Role.APPROVER,
        "archive": Role.APPROVER,
        "approve_promotion": Role.APPROVER,
        "refuse_promotion": Role.APPROVER,
    }

    @extend_schema(
        request=None,
        responses={202: ModelVersionSerializer},
        description="Asks the partner to promote its half: both halves turn production together once it accepts. "
        "Answers 202 with `promotion: requested` (idempotent while pending); a refusal shows as "
        "`promotion: refused` with `promotion_reason`.",
    )
    @action(detail=True, methods=["post"])
    def promote(self, request, *args, **kwargs):
        mv = request_promotion(self.get_object(), acting_user=request.user, source=self.source)
        return Response(ModelVersionSerializer(mv).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses=ModelVersionSerializer,
        description="Archives this half. A production version leaves production on both sides: the partner "
        "archives its half (peer `model.demote`) and the version's serve jobs stop on both sides.",
    )
    @action(detail=True, methods=["post"])
    def archive(self, request, *args, **kwargs):
        mv = set_stage(self.get_object(), Stage.ARCHIVED, acting_user=request.user, source=self.source)
        return Response(ModelVersionSerializer(mv).data)

    @extend_schema(
        request=None,
        responses=ModelVersionSerializer,
        description="Approves the partner's request to promote this version (`promotion: awaiting`, held by a "
        "`manual` model_promotion policy for that partner): both halves turn production.",
    )
    @action(detail=True, methods=["post"], url_path="approve-promotion")
    def approve_promotion(self, request, *args, **kwargs):
        mv = decide_promotion(self.get_object(), approve=True, acting_user=request.user, source=self.source)
        return Response(ModelVersionSerializer(mv).data)

    @extend_schema(
        request=DecisionSerializer,
        responses=ModelVersionSerializer,
        description="Refuses the partner's request to promote this version; the partner sees the reason.",
    )
    @action(detail=True, methods=["post"], url_path="refuse-promotion")
    def refuse_promotion(self, request, *args, **kwargs):
        ser = DecisionSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        mv = decide_promotion(
            self.get_object(),
            approve=False,
            reason=ser.validated_data.get("reason", ""),
            acting_user=request.user,
            source=self.source,
        )
        return Response(ModelVersionSerializer(mv).data)

    @extend_schema(
        request=PredictRequestSerializer,
        responses={200: PredictResponseSerializer},
        description="Scores from the model version's running serve job (leader side only). Per id a score, or "
        "`score: null` with the reason (unknown to the partner, unknown here without features, bad features). "
        "503 when no serve job runs or the partner's half is down or slower than the ticket's deadline.",
    )
    # Routed in fedsite/api_urls.py as documented: …/model-versions/{id}/predict (no trailing slash).
    def predict(self, request, *args, **kwargs):
        body = request.data if isinstance(request.data, dict) else {}
        return Response(predict(self.get_object(), body.get("ids"), body.get("features")))
