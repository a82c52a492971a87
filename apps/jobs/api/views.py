from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from apps.core.api import TenantViewSet
from apps.datasets.api.serializers import DatasetSerializer
from apps.jobs.api.serializers import (
    CancelSerializer,
    JobMetricSerializer,
    JobOutputSerializer,
    JobSerializer,
    RegisterOutputSerializer,
    RuntimeReportSerializer,
)
from apps.jobs.models import Job, JobMetric
from apps.jobs.outputs import CONTENT_TYPE, get_output, job_outputs, open_output, register_output
from apps.jobs.services import apply_report, cancel_job, job_for_token, metric_points, retry_job
from apps.workspaces.choices import Role


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Runs of tickets on this side, with the partner's status beside ours."""

    serializer_class = JobSerializer
    queryset = Job.objects.select_related("ticket")
    filterset_fields = ["status", "ticket", "role"]
    action_roles = {"retry": Role.APPROVER}
    OUTPUT = r"outputs/(?P<output_name>[A-Za-z0-9_-]{1,64})"
    output_param = OpenApiParameter(
        "output_name", OpenApiTypes.STR, OpenApiParameter.PATH, description="`aligned` or `scores`"
    )

    @extend_schema(request=CancelSerializer, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, *args, **kwargs):
        ser = CancelSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        job = cancel_job(
            self.get_object(), acting_user=request.user, source=self.source, reason=ser.validated_data["reason"]
        )
        return Response(JobSerializer(job).data)

    @extend_schema(request=None, responses={201: JobSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, *args, **kwargs):
        """Run a failed or cancelled job's ticket again as a new attempt; the partner runs the same attempt."""
        job = retry_job(self.get_object(), acting_user=request.user, source=self.source)
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[
            OpenApiParameter("name", str, description="only this metric (e.g. `auc`, `loss`)"),
            OpenApiParameter("split", str, description="only this split (`train`, `validation`, `early_stopping`)"),
            OpenApiParameter(
                "side", str, enum=JobMetric.Side.values, description="`local`: this side's; `remote`: the partner's"
            ),
        ],
        responses=JobMetricSerializer(many=True),
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def metrics(self, request, *args, **kwargs):
        """Every metric point of the job, both sides (the partner's where it shares them): a plain list sorted
        by step (then epoch, side, name, split), each point once per side (a repeated report keeps the latest)."""
        filters = {}
        for key in ("name", "split", "side"):
            value = request.query_params.get(key)
            if value:
                filters[key] = value
        if filters.get("side", JobMetric.Side.LOCAL) not in JobMetric.Side.values:
            raise ValidationError({"side": [f"must be one of {', '.join(JobMetric.Side.values)}"]})
        return Response(JobMetricSerializer(metric_points(self.get_object(), **filters), many=True).data)

    @extend_schema(responses=JobOutputSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def outputs(self, request, *args, **kwargs):
        """This side's outputs of the job (the PSI aligned table, the leader's scores): name, kind, path, size.
        404 naming why when this installation cannot read the job's output folder."""
        return Response(JobOutputSerializer([o.as_dict() for o in job_outputs(self.get_object())], many=True).data)

    @extend_schema(
        parameters=[output_param],
        responses={(200, CONTENT_TYPE): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], url_path=rf"{OUTPUT}/download", url_name="output-download")
    def download_output(self, request, output_name, *args, **kwargs):
        """Download one of this side's outputs (404 for a name the job has not written here)."""
        job = self.get_object()
        out = get_output(job, output_name)
        name = f"{job.id}-{out.name}.csv"
        return FileResponse(open_output(out), as_attachment=True, filename=name, content_type=CONTENT_TYPE)

    @extend_schema(parameters=[output_param], request=RegisterOutputSerializer, responses={201: DatasetSerializer})
    @action(detail=True, methods=["post"], url_path=rf"{OUTPUT}/register", url_name="output-register")
    def register_output(self, request, output_name, *args, **kwargs):
        """Register one of this side's outputs as a dataset of this workspace (the file is copied into its folder)."""
        job = self.get_object()
        ser = RegisterOutputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        dataset = register_output(
            job,
            output_name,
            dataset_name=ser.validated_data["name"],
            description=ser.validated_data["description"],
            acting_user=request.user,
            source=self.source,
        )
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class RuntimeReportThrottle(SimpleRateThrottle):
    scope = "runtime-report"

    def get_cache_key(self, request, view):
        return f"runtime-report:{view.kwargs.get('job_id')}"


class RuntimeReportView(APIView):
    """Where a job's runtime posts progress, metrics and log lines, with its per-job token."""

    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(request=RuntimeReportSerializer, responses={202: None}, auth=[])
    def post(self, request, job_id):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        job = job_for_token(job_id, token) if token else None
        if job is None:
            return Response({"detail": "unknown job or bad job token"}, status=status.HTTP_401_UNAUTHORIZED)
        ser = RuntimeReportSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        applied = apply_report(job, ser.validated_data["events"])
        return Response({"applied": applied}, status=status.HTTP_202_ACCEPTED)
