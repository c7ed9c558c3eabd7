"""Pipelines: what users run on their data, over the core (no ROS here; replay/ is the pipeline that uses the node).

Modules:
    build_map   posed images -> map (keyframes, 3D points, retrieval index), with a build key for reuse
    evaluate    a map against posed query images: errors, recalls, NEES, latency; ``--track`` cold starts
"""
