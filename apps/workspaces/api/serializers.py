from rest_framework import serializers

from apps.workspaces.choices import Role
from apps.workspaces.models import Membership, Workspace, slug_validator


class WorkspaceSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="your role here")

    class Meta:
        model = Workspace
        fields = ["id", "slug", "name", "created_at", "role"]
        read_only_fields = ["id", "created_at", "role"]
        # No uniqueness check here: create_workspace says a slug is taken without revealing by whom.
        extra_kwargs = {"slug": {"validators": [slug_validator]}}

    def get_role(self, obj: Workspace) -> str:
        user = self.context["request"].user
        m = Membership.objects.filter(workspace=obj, user=user).first()
        return m.role if m else ""


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["id", "username", "role", "created_at"]
        read_only_fields = ["id", "created_at"]


class MembershipRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices, help_text="the member's new role")
