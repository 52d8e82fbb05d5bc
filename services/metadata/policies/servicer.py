"""PolicyServiceServicer: translates protobuf to `PolicyCore` calls and back, nothing else."""

from __future__ import annotations

import grpc
from lading.metadata.v1 import policies_pb2 as pb
from lading.metadata.v1 import policies_pb2_grpc

from services.metadata.events import context as request_context
from services.metadata.policies.core import PolicyCore
from services.metadata.policies.quotas import Quota
from services.metadata.policies.retention import RetentionPlan, RetentionPolicy
from services.metadata.policies.signatures import SignaturePolicy
from services.metadata.policies.store import StoredRule, rfc3339
from services.metadata.policies.vulnerabilities import VulnerabilityPolicy


def _rule(stored: StoredRule) -> pb.ImmutableRule:
    return pb.ImmutableRule(name=stored.rule.name, repository_pattern=stored.rule.repository_pattern,
                            tag_pattern=stored.rule.tag_pattern, created_by=stored.created_by,
                            created_at=rfc3339(stored.created_at))


class PolicyServicer(policies_pb2_grpc.PolicyServiceServicer):
    def __init__(self, core: PolicyCore) -> None:
        self._core = core

    async def SetImmutableRule(self, request: pb.SetImmutableRuleRequest, context: grpc.aio.ServicerContext
                               ) -> pb.ImmutableRule:
        request_context.bind(request)
        return _rule(await self._core.set_rule(request.name, request.repository_pattern, request.tag_pattern))

    async def DeleteImmutableRule(self, request: pb.DeleteImmutableRuleRequest, context: grpc.aio.ServicerContext
                                  ) -> pb.DeleteImmutableRuleResponse:
        request_context.bind(request)
        return pb.DeleteImmutableRuleResponse(deleted=await self._core.delete_rule(request.name))

    async def ListImmutableRules(self, request: pb.ListImmutableRulesRequest, context: grpc.aio.ServicerContext
                                 ) -> pb.ListImmutableRulesResponse:
        return pb.ListImmutableRulesResponse(rules=[_rule(item) for item in await self._core.list_rules()])

    async def AllowTagOverride(self, request: pb.AllowTagOverrideRequest, context: grpc.aio.ServicerContext
                               ) -> pb.AllowTagOverrideResponse:
        request_context.bind(request)
        rule, expires = await self._core.allow_override(request.repository, request.tag, request.reason)
        return pb.AllowTagOverrideResponse(rule=rule.name, expires_at=rfc3339(expires))

    async def GetTagHistory(self, request: pb.GetTagHistoryRequest, context: grpc.aio.ServicerContext
                            ) -> pb.GetTagHistoryResponse:
        entries = await self._core.history(request.repository, request.tag, request.limit)
        return pb.GetTagHistoryResponse(entries=[
            pb.TagHistoryEntry(tag=e.tag, old_digest=e.old_digest or "", new_digest=e.new_digest or "",
                               action=e.action, actor=e.actor, at=rfc3339(e.at)) for e in entries])

    async def RestoreTag(self, request: pb.RestoreTagRequest, context: grpc.aio.ServicerContext
                         ) -> pb.RestoreTagResponse:
        request_context.bind(request)
        digest, moved = await self._core.restore(request.repository, request.tag, digest=request.digest,
                                                 at=request.at)
        return pb.RestoreTagResponse(digest=digest, moved=moved)

    async def ListAudit(self, request: pb.ListAuditRequest, context: grpc.aio.ServicerContext
                        ) -> pb.ListAuditResponse:
        entries = await self._core.audit(since=request.since, actor=request.actor, repository=request.repository,
                                         limit=request.limit)
        return pb.ListAuditResponse(records=[
            pb.AuditRecord(id=e.id, at=rfc3339(e.at), actor=e.actor, action=e.action, target=e.target,
                           repository=e.repository or "", client_address=e.client_address, request_id=e.request_id,
                           outcome=e.outcome, detail=e.detail) for e in entries])

    async def SetQuota(self, request: pb.SetQuotaRequest, context: grpc.aio.ServicerContext) -> pb.QuotaUsage:
        request_context.bind(request)
        return _quota(await self._core.set_quota(request.name, request.repository_pattern, request.limit))

    async def DeleteQuota(self, request: pb.DeleteQuotaRequest, context: grpc.aio.ServicerContext
                          ) -> pb.DeleteQuotaResponse:
        request_context.bind(request)
        return pb.DeleteQuotaResponse(deleted=await self._core.delete_quota(request.name))

    async def ListQuotas(self, request: pb.ListQuotasRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ListQuotasResponse:
        return pb.ListQuotasResponse(quotas=[_quota(q) for q in await self._core.list_quotas()])

    async def RecountQuotas(self, request: pb.RecountQuotasRequest, context: grpc.aio.ServicerContext
                            ) -> pb.RecountQuotasResponse:
        request_context.bind(request)
        counted = await self._core.recount_quotas()
        return pb.RecountQuotasResponse(quotas=[pb.QuotaRecount(name=name, before_bytes=before, after_bytes=after)
                                                for name, (before, after) in counted.items()])

    async def SetRetentionPolicy(self, request: pb.SetRetentionPolicyRequest, context: grpc.aio.ServicerContext
                                 ) -> pb.SetRetentionPolicyResponse:
        request_context.bind(request)
        p = request.policy
        await self._core.set_retention(RetentionPolicy(p.name, p.repository_pattern, p.keep_last, p.keep_tags,
                                                       float(p.untagged_after_seconds)))
        return pb.SetRetentionPolicyResponse()

    async def DeleteRetentionPolicy(self, request: pb.DeleteRetentionPolicyRequest,
                                    context: grpc.aio.ServicerContext) -> pb.DeleteRetentionPolicyResponse:
        request_context.bind(request)
        return pb.DeleteRetentionPolicyResponse(deleted=await self._core.delete_retention(request.name))

    async def ListRetentionPolicies(self, request: pb.ListRetentionPoliciesRequest,
                                    context: grpc.aio.ServicerContext) -> pb.ListRetentionPoliciesResponse:
        return pb.ListRetentionPoliciesResponse(policies=[
            pb.RetentionPolicy(name=p.name, repository_pattern=p.repository_pattern, keep_last=p.keep_last,
                               keep_tags=p.keep_tags, untagged_after_seconds=int(p.untagged_after_seconds))
            for p in await self._core.list_retention()])

    async def PlanRetention(self, request: pb.PlanRetentionRequest, context: grpc.aio.ServicerContext
                            ) -> pb.RetentionPlan:
        return _plan(await self._core.plan_retention())

    async def RunRetention(self, request: pb.RunRetentionRequest, context: grpc.aio.ServicerContext
                           ) -> pb.RunRetentionResponse:
        request_context.bind(request)
        plan, result = await self._core.run_retention()
        return pb.RunRetentionResponse(plan=_plan(plan), tags_deleted=result.tags_deleted,
                                       manifests_deleted=result.manifests_deleted, skipped=result.skipped)

    async def SetSignaturePolicy(self, request: pb.SetSignaturePolicyRequest, context: grpc.aio.ServicerContext
                                 ) -> pb.SetSignaturePolicyResponse:
        request_context.bind(request)
        p = request.policy
        await self._core.set_signature_policy(SignaturePolicy(p.name, p.repository_pattern, p.type or "any",
                                                              p.public_keys))
        return pb.SetSignaturePolicyResponse()

    async def DeleteSignaturePolicy(self, request: pb.DeleteSignaturePolicyRequest,
                                    context: grpc.aio.ServicerContext) -> pb.DeleteSignaturePolicyResponse:
        request_context.bind(request)
        return pb.DeleteSignaturePolicyResponse(deleted=await self._core.delete_signature_policy(request.name))

    async def ListSignaturePolicies(self, request: pb.ListSignaturePoliciesRequest,
                                    context: grpc.aio.ServicerContext) -> pb.ListSignaturePoliciesResponse:
        return pb.ListSignaturePoliciesResponse(policies=[
            pb.SignaturePolicy(name=p.name, repository_pattern=p.repository_pattern, type=p.kind,
                               public_keys=p.public_keys) for p in await self._core.list_signature_policies()])

    async def SetVulnerabilityPolicy(self, request: pb.SetVulnerabilityPolicyRequest,
                                     context: grpc.aio.ServicerContext) -> pb.SetVulnerabilityPolicyResponse:
        request_context.bind(request)
        p = request.policy
        await self._core.set_vulnerability_policy(VulnerabilityPolicy(
            p.name, p.repository_pattern, p.severity, float(p.max_age_seconds), ",".join(p.allow)))
        return pb.SetVulnerabilityPolicyResponse()

    async def DeleteVulnerabilityPolicy(self, request: pb.DeleteVulnerabilityPolicyRequest,
                                        context: grpc.aio.ServicerContext) -> pb.DeleteVulnerabilityPolicyResponse:
        request_context.bind(request)
        return pb.DeleteVulnerabilityPolicyResponse(deleted=await self._core.delete_vulnerability_policy(request.name))

    async def ListVulnerabilityPolicies(self, request: pb.ListVulnerabilityPoliciesRequest,
                                        context: grpc.aio.ServicerContext) -> pb.ListVulnerabilityPoliciesResponse:
        return pb.ListVulnerabilityPoliciesResponse(policies=[
            pb.VulnerabilityPolicy(name=p.name, repository_pattern=p.repository_pattern, severity=p.severity,
                                   max_age_seconds=int(p.max_age_seconds), allow=sorted(p.allowed))
            for p in await self._core.list_vulnerability_policies()])


def _plan(plan: RetentionPlan) -> pb.RetentionPlan:
    return pb.RetentionPlan(
        tags=[pb.PlannedDeletion(repository=t.repository, tag=t.tag, digest=t.digest, policy=t.policy)
              for t in plan.tags],
        manifests=[pb.PlannedDeletion(repository=m.repository, digest=m.digest, policy=m.policy)
                   for m in plan.manifests],
        bytes=plan.bytes)


def _quota(quota: Quota) -> pb.QuotaUsage:
    return pb.QuotaUsage(name=quota.name, repository_pattern=quota.repository_pattern,
                         limit_bytes=quota.limit_bytes, used_bytes=quota.used_bytes)
