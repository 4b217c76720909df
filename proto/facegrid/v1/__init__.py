"""Generated gRPC code for the FaceGrid contracts (proto/facegrid/v1/*.proto).

Everything here except this file is written by scripts/gen_proto.py; never edit it by hand.
"""
