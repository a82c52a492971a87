from django.urls import path

from apps.dashboard.views import audit, datasets, jobs, members, models, overview, partners, tickets

app_name = "dashboard"

ws = "w/<slug:slug>/"
urlpatterns = [
    path("", overview.home, name="home"),
    path("switch", overview.switch, name="switch"),
    path(ws, overview.overview, name="overview"),
    path(ws + "stamp", overview.stamp, name="stamp"),
    path(ws + "partners/", partners.partner_list, name="partners"),
    path(ws + "partners/invite", partners.invite, name="partner-invite"),
    path(ws + "partners/invitations/revoke", partners.revoke_invitation, name="partner-invitation-revoke"),
    path(ws + "partners/accept", partners.accept, name="partner-accept"),
    path(ws + "partners/<uuid:pk>/", partners.partner_detail, name="partner"),
    path(ws + "partners/<uuid:pk>/policies", partners.policies, name="partner-policies"),
    path(ws + "partners/<uuid:pk>/status", partners.status, name="partner-status"),
    path(ws + "datasets/", datasets.dataset_list, name="datasets"),
    path(ws + "datasets/new", datasets.register, name="dataset-new"),
    path(ws + "datasets/<uuid:pk>/", datasets.dataset_detail, name="dataset"),
    path(ws + "datasets/<uuid:pk>/grant", datasets.grant, name="dataset-grant"),
    path(ws + "datasets/<uuid:pk>/revoke", datasets.revoke, name="dataset-revoke"),
    path(ws + "tickets/", tickets.ticket_list, name="tickets"),
    path(ws + "tickets/new", tickets.propose, name="ticket-new"),
    path(ws + "tickets/<uuid:pk>/", tickets.ticket_detail, name="ticket"),
    path(ws + "tickets/<uuid:pk>/approve", tickets.approve, name="ticket-approve"),
    path(ws + "tickets/<uuid:pk>/reject", tickets.reject, name="ticket-reject"),
    path(ws + "tickets/<uuid:pk>/withdraw", tickets.withdraw, name="ticket-withdraw"),
    path(ws + "jobs/", jobs.job_list, name="jobs"),
    path(ws + "jobs/<uuid:pk>/", jobs.job_detail, name="job"),
    path(ws + "jobs/<uuid:pk>/live", jobs.job_live, name="job-live"),
    path(ws + "jobs/<uuid:pk>/cancel", jobs.cancel, name="job-cancel"),
    path(ws + "jobs/<uuid:pk>/retry", jobs.retry, name="job-retry"),
    path(ws + "jobs/<uuid:pk>/outputs/<str:name>/download", jobs.output_download, name="job-output-download"),
    path(ws + "jobs/<uuid:pk>/outputs/<str:name>/register", jobs.output_register, name="job-output-register"),
    path(ws + "models/", models.model_list, name="models"),
    path(ws + "models/compare", models.compare, name="model-compare"),
    path(ws + "models/<uuid:pk>/", models.model_detail, name="model"),
    path(ws + "models/<uuid:pk>/stage", models.stage, name="model-stage"),
    path(ws + "models/<uuid:pk>/promotion", models.promotion_decision, name="model-promotion"),
    path(ws + "members/", members.member_list, name="members"),
    path(ws + "members/add", members.add, name="member-add"),
    path(ws + "members/<int:pk>/role", members.role, name="member-role"),
    path(ws + "members/<int:pk>/remove", members.remove, name="member-remove"),
    path(ws + "audit/", audit.audit_log, name="audit"),
]
