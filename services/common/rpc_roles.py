"""The one table of who may call what on the gRPC planes: every method → the roles that may call it.

Roles (who holds one is configured in `grpc_access`, see services/common/access.py):
  gateway   the HTTP gateways: the data calls of both planes, credential and scope checks, the
            maintenance flag;
  operator  the `lading` admin commands: accounts, grants, GC, repositories, events, checks;
  metadata  the metadata plane as a client of the blob plane: the first-link byte check and GC.

A method missing here is refused to everyone (fail closed), and tests/unit/test_rpc_roles.py fails
when a service in the generated descriptors has a method without an entry, so a new RPC needs a
line below before anything can call it. OPEN methods need no identity (health, for probes).
"""

from __future__ import annotations

from collections.abc import Mapping

GATEWAY = "gateway"
OPERATOR = "operator"
METADATA = "metadata"
ROLES = (GATEWAY, OPERATOR, METADATA)

OPEN: frozenset[str] = frozenset()
GATEWAY_ONLY = frozenset({GATEWAY})
OPERATOR_ONLY = frozenset({OPERATOR})

# service (full proto name) → method → roles (any one of them suffices).
SERVICE_ROLES: Mapping[str, Mapping[str, frozenset[str]]] = {
    "grpc.health.v1.Health": {
        "Check": OPEN,
        "Watch": OPEN,
        "List": OPEN,
    },
    "lading.metadata.v1.MetadataService": {
        "LinkBlob": GATEWAY_ONLY,
        "StatBlob": GATEWAY_ONLY,
        "UnlinkBlob": GATEWAY_ONLY,
        "MountBlob": GATEWAY_ONLY,
        "PutManifest": GATEWAY_ONLY,
        "GetManifest": GATEWAY_ONLY,
        # `lading tag delete` / `lading manifest delete` too.
        "DeleteManifest": frozenset({GATEWAY, OPERATOR}),
        "ListTags": GATEWAY_ONLY,
        "ListRepositories": GATEWAY_ONLY,
        "ListReferrers": GATEWAY_ONLY,
    },
    "lading.metadata.v1.AccountService": {
        "CreateUser": OPERATOR_ONLY,
        "SetPassword": OPERATOR_ONLY,
        "DeleteAccount": OPERATOR_ONLY,
        "CreateRobot": OPERATOR_ONLY,
        "ListAccounts": OPERATOR_ONLY,
        "Grant": OPERATOR_ONLY,
        "Revoke": OPERATOR_ONLY,
        "ListGrants": OPERATOR_ONLY,
        # The gateway checks logins and scopes; nobody else needs a password oracle.
        # `verified_recently` on Authenticate is trusted because only gateways may send it.
        "Authenticate": GATEWAY_ONLY,
        "Authorize": GATEWAY_ONLY,
        # The gateway's fail-safe check while its revocation feed is down.
        "GetCredentialStates": GATEWAY_ONLY,
        "RevokeTokens": OPERATOR_ONLY,
        "RotateRobotSecret": OPERATOR_ONLY,
        "SetAccountDisabled": OPERATOR_ONLY,
        # `lading group map|unmap|list`: directory and provider groups → grants.
        "MapGroup": OPERATOR_ONLY,
        "UnmapGroup": OPERATOR_ONLY,
        "ListGroupMappings": OPERATOR_ONLY,
    },
    "lading.metadata.v1.ChangeService": {
        # The gateways' revocation feed and cache feed, and `GET /lading/v1/watch`.
        "WatchChanges": GATEWAY_ONLY,
    },
    "lading.metadata.v1.ChangeAckService": {
        # The gateways' caches acknowledge what they applied (read-your-writes through every cache).
        "AcknowledgeChanges": GATEWAY_ONLY,
        # A replica region's metadata plane, as itself (its identity has the gateway and operator
        # roles in the primary region: README "Two regions"), fences its region's laggards there.
        "FenceSubscribers": frozenset({GATEWAY, OPERATOR}),
    },
    "lading.metadata.v1.AdminService": {
        "GcPlan": OPERATOR_ONLY,
        "GcSweepMetadata": OPERATOR_ONLY,
        "GcMarkBlobs": OPERATOR_ONLY,
        "GcForgetBlob": OPERATOR_ONLY,
        "GcClaimOrphans": OPERATOR_ONLY,
        "GcRecordRun": OPERATOR_ONLY,
        "GcStats": OPERATOR_ONLY,
        "ListRepositories": OPERATOR_ONLY,
        "ListTags": OPERATOR_ONLY,
        "ListManifests": OPERATOR_ONLY,
        "DeleteRepository": OPERATOR_ONLY,
        "WhereBlob": OPERATOR_ONLY,
        "ListBlobs": OPERATOR_ONLY,
        "SetMaintenance": OPERATOR_ONLY,
        # Gateways refuse writes while maintenance mode is on.
        "GetMaintenance": frozenset({GATEWAY, OPERATOR}),
    },
    "lading.metadata.v1.RegionService": {
        # `lading region status`.
        "GetRegionStatus": OPERATOR_ONLY,
    },
    "lading.metadata.v1.EventsService": {
        "ListEvents": OPERATOR_ONLY,
        "ReplayEvents": OPERATOR_ONLY,
    },
    "lading.metadata.v1.ConsoleService": {
        # The web console (gateway/console) runs in the gateways. CreateSession names an account
        # the gateway has just authenticated, trusted because only gateways may call it (as
        # Authenticate's `verified_recently`); every other call names a session this plane
        # created, and the plane applies that session's account's permissions itself.
        "GetSignInOptions": GATEWAY_ONLY,
        "CreateSession": GATEWAY_ONLY,
        "OidcAuthorizationUrl": GATEWAY_ONLY,
        "CompleteOidcSignIn": GATEWAY_ONLY,
        "GetSession": GATEWAY_ONLY,
        "EndSession": GATEWAY_ONLY,
        "CreateCliSecret": GATEWAY_ONLY,
        "RevokeCliSecret": GATEWAY_ONLY,
        "SearchRepositories": GATEWAY_ONLY,
        "ListTagDetails": GATEWAY_ONLY,
        "GetManifestDetails": GATEWAY_ONLY,
        "ListReferrerTree": GATEWAY_ONLY,
        "DeleteTag": GATEWAY_ONLY,
        "AdminListAccounts": GATEWAY_ONLY,
        "AdminCreateUser": GATEWAY_ONLY,
        "AdminDeleteAccount": GATEWAY_ONLY,
        "AdminSetAccountDisabled": GATEWAY_ONLY,
        "AdminCreateRobot": GATEWAY_ONLY,
        "AdminGrant": GATEWAY_ONLY,
        "AdminRevoke": GATEWAY_ONLY,
        "AdminListGrants": GATEWAY_ONLY,
        "AdminListGroupMappings": GATEWAY_ONLY,
        "AdminMapGroup": GATEWAY_ONLY,
        "AdminUnmapGroup": GATEWAY_ONLY,
        "AdminGcStats": GATEWAY_ONLY,
        "AdminGcPlan": GATEWAY_ONLY,
        "AdminListEvents": GATEWAY_ONLY,
        "AdminReplayEvents": GATEWAY_ONLY,
        "AdminGetMaintenance": GATEWAY_ONLY,
        "AdminSetMaintenance": GATEWAY_ONLY,
        "AdminStorage": GATEWAY_ONLY,
    },
    "lading.metadata.v1.ProxyService": {
        # The gateway passes a blob's fetch lease between the two planes; `lading proxy status`.
        "BeginBlobFetch": GATEWAY_ONLY,
        "EndBlobFetch": GATEWAY_ONLY,
        "RenewBlobFetch": GATEWAY_ONLY,
        "ProxyStatus": frozenset({GATEWAY, OPERATOR}),
        "EvictCached": OPERATOR_ONLY,
    },
    "lading.metadata.v1.ReplicationService": {
        # `lading replication run RULE`.
        "RunReplication": OPERATOR_ONLY,
    },
    "lading.metadata.v1.RegionFetchService": {
        # Fetch on miss between regions: the gateway holds the region's lease between the planes;
        # a replica region's metadata plane passes the calls on to the primary region's with the
        # gateway's own credentials (the regions share their grpc_access credentials).
        "BeginRegionFetch": GATEWAY_ONLY,
        "EndRegionFetch": GATEWAY_ONLY,
        "RenewRegionFetch": GATEWAY_ONLY,
    },
    "lading.blob.v1.FetchService": {
        # Fetch on miss: the gateway, holding the blob's lease from ProxyService.BeginBlobFetch;
        # the metadata plane's pull-based mirroring ([[proxy.mirrors]]).
        "FetchBlob": frozenset({GATEWAY, METADATA}),
    },
    "lading.metadata.v1.PolicyService": {
        # Governance (services/metadata/policies): `lading immutable|tag history|tag restore`.
        "SetImmutableRule": OPERATOR_ONLY,
        "DeleteImmutableRule": OPERATOR_ONLY,
        "ListImmutableRules": OPERATOR_ONLY,
        "AllowTagOverride": OPERATOR_ONLY,
        # The gateway serves it as GET /lading/v1/repositories/<name>/tags/<tag>/history (pull).
        "GetTagHistory": frozenset({GATEWAY, OPERATOR}),
        "RestoreTag": OPERATOR_ONLY,
        # `lading audit`.
        "ListAudit": OPERATOR_ONLY,
        # `lading quota set|remove|show|recount`.
        "SetQuota": OPERATOR_ONLY,
        "DeleteQuota": OPERATOR_ONLY,
        "ListQuotas": OPERATOR_ONLY,
        "RecountQuotas": OPERATOR_ONLY,
        # `lading retention set|remove|list|plan|run`.
        "SetRetentionPolicy": OPERATOR_ONLY,
        "DeleteRetentionPolicy": OPERATOR_ONLY,
        "ListRetentionPolicies": OPERATOR_ONLY,
        "PlanRetention": OPERATOR_ONLY,
        "RunRetention": OPERATOR_ONLY,
        # `lading signature require|remove|list`.
        "SetSignaturePolicy": OPERATOR_ONLY,
        "DeleteSignaturePolicy": OPERATOR_ONLY,
        "ListSignaturePolicies": OPERATOR_ONLY,
        # `lading vuln require|remove|list`.
        "SetVulnerabilityPolicy": OPERATOR_ONLY,
        "DeleteVulnerabilityPolicy": OPERATOR_ONLY,
        "ListVulnerabilityPolicies": OPERATOR_ONLY,
    },
    "lading.blob.v1.BlobService": {
        # The metadata plane confirms bytes before a blob's first link; `lading check` too.
        "StatBlob": frozenset({GATEWAY, METADATA, OPERATOR}),
        # `lading check --verify-sample` re-hashes blobs; the metadata plane's replication copies
        # them and reads cosign signature payloads to verify them (services/metadata/policies).
        "ReadBlob": frozenset({GATEWAY, OPERATOR, METADATA}),
        # Garbage collection: the metadata plane's collector and `lading gc`.
        "DeleteBlob": frozenset({METADATA, OPERATOR}),
        "ListBlobs": frozenset({METADATA, OPERATOR}),
        "StartUpload": GATEWAY_ONLY,
        "AppendUpload": GATEWAY_ONLY,
        "GetUploadStatus": GATEWAY_ONLY,
        "CommitUpload": GATEWAY_ONLY,
        "CancelUpload": GATEWAY_ONLY,
        "PurgeUploads": frozenset({METADATA, OPERATOR}),
    },
}


def method_roles(table: Mapping[str, Mapping[str, frozenset[str]]] = SERVICE_ROLES) -> dict[str, frozenset[str]]:
    """The table keyed the way gRPC names a call: `/<service>/<method>` → roles."""
    return {f"/{service}/{method}": roles for service, methods in table.items() for method, roles in methods.items()}
