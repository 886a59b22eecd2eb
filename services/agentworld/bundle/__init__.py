"""Environment bundles: the on-disk format every other part reads (see docs/bundle-format.md)."""

from agentworld.bundle.model import (
    BUNDLE_FILES,
    FORMAT_VERSION,
    Bundle,
    BundleError,
    EnvManifest,
    Task,
    ToolCall,
    compute_content_hash,
    find_bundles,
    load_bundle,
    write_bundle,
)

__all__ = [
    "BUNDLE_FILES",
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "EnvManifest",
    "Task",
    "ToolCall",
    "compute_content_hash",
    "find_bundles",
    "load_bundle",
    "write_bundle",
]
