"""The kubernetes filter's options: Fluent Bit's names and defaults, plus a few of ours."""

from __future__ import annotations

from logfwd.options import PORT, Option

__all__ = ["OPTIONS", "SA_DIR"]

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

OPTIONS: tuple[Option, ...] = (
    Option("Kube_URL", "str", "https://kubernetes.default.svc:443", "API server URL"),
    Option("Kube_CA_File", "str", f"{SA_DIR}/ca.crt", "CA certificate (PEM) the API server's certificate is checked with"),
    Option("Kube_CA_Path", "str", None, "directory of CA certificates (hashed names)"),
    Option("Kube_Token_File", "str", f"{SA_DIR}/token",
           "bearer token file; read again when it changes (projected tokens rotate) and after a 401"),
    Option("Kube_Token_TTL", "time", "600", "read the token file (or run Kube_Token_Command) again at least "
           "this often", minimum=1),
    Option("Kube_Token_Command", "str", None, "shell command printing the token (instead of Kube_Token_File); "
           "run again after Kube_Token_TTL and after a 401"),
    Option("Kube_Tag_Prefix", "str", "kube.var.log.containers.",
           "tag prefix cut off before the file name is split into pod, namespace, container and id "
           "(not used with Use_Journal)"),
    Option("Regex_Parser", "str", None,
           "regex parser splitting the tag (after the prefix), or CONTAINER_NAME with Use_Journal, into pod_name, "
           "namespace_name, container_name, docker_id"),
    Option("Merge_Log", "bool", "off", "merge a JSON object (or Merge_Parser's fields) in 'log' into the record"),
    Option("Merge_Log_Key", "str", None, "put merged fields under this key instead of the record's root"),
    Option("Merge_Log_Trim", "bool", "on", "trim white space around merged string values"),
    Option("Merge_Parser", "str", None, "parser for 'log' instead of JSON when Merge_Log is on"),
    Option("Keep_Log", "bool", "on", "keep the 'log' field after it was merged"),
    Option("Labels", "bool", "on", "add the pod's labels"),
    Option("Annotations", "bool", "on", "add the pod's annotations"),
    Option("Owner_References", "bool", "off", "add the pod's ownerReferences"),
    Option("Namespace_Labels", "bool", "off", "add the namespace's labels under kubernetes_namespace"),
    Option("Namespace_Annotations", "bool", "off", "add the namespace's annotations under kubernetes_namespace"),
    Option("Namespace_Metadata_Only", "bool", "off", "add namespace metadata only, no pod metadata"),
    Option("K8S-Logging.Parser", "bool", "off",
           "let a pod name the parser for its 'log' field (annotation fluentbit.io/parser; needs Merge_Log)"),
    Option("K8S-Logging.Exclude", "bool", "off", "drop records of pods annotated fluentbit.io/exclude: \"true\""),
    Option("Kube_Meta_Cache_TTL", "time", "0", "expire pod metadata fetched one by one after this long (0: never)"),
    Option("Kube_Meta_Namespace_Cache_TTL", "time", "900", "expire namespace metadata fetched one by one"),
    Option("Kube_Meta_Cache_Size", "int", "4096", "most pods (and namespaces) kept in the cache", minimum=16),
    Option("Kube_Meta_Deleted_Grace", "time", "300",
           "keep a deleted pod's metadata this long, for its last lines still being read"),
    Option("Kube_Node_Name", "str", None,
           "watch the pods of this node (default: the NODE_NAME environment variable); unset: one GET per new pod"),
    Option("Kube_Request_Timeout", "time", "5", "timeout of one API request", minimum=0.1),
    Option("Buffer_Size", "size", "32k", "largest pod object a one-pod GET reads (0: no limit)"),
    Option("Use_Kubelet", "bool", "off", "read pods from the kubelet's /pods instead of the API server"),
    Option("Kubelet_Host", "str", "127.0.0.1", "kubelet host for Use_Kubelet"),
    Option("Kubelet_Port", "int", "10250", "kubelet port for Use_Kubelet", **PORT),
    Option("Use_Tag_For_Meta", "bool", "off", "only the fields the tag holds; no API requests"),
    Option("Cache_Use_Docker_Id", "bool", "off", "fetch a pod again when its container id changes"),
    Option("tls.verify", "bool", "on", "verify the API server's certificate"),
    Option("tls.vhost", "str", None, "host name sent in SNI and checked in the certificate"),
    Option("tls.debug", "int", "-1", "Fluent Bit's TLS debug level",
           unsupported="handshake failures are logged as errors; there are no debug levels"),
    Option("Use_Journal", "bool", "off",
           "records come from the journal (Docker's journald log driver): each record's CONTAINER_NAME names its "
           "pod, namespace and container instead of the tag"),
    Option("Kube_Meta_Preload_Cache_Dir", "str", None, "directory of pod metadata files read at start",
           unsupported="the pod watch fills the cache at start"),
    Option("Dummy_Meta", "bool", "off", "attach fixed dummy metadata", unsupported="a testing aid of Fluent Bit"),
    Option("DNS_Retries", "int", "6", "DNS lookups of the API host at start",
           unsupported="the API is retried with backoff for as long as the daemon runs"),
    Option("DNS_Wait_Time", "int", "30", "seconds between DNS lookups at start",
           unsupported="the API is retried with backoff for as long as the daemon runs"),
)
