"""Without the licence's fast-index feature a shard searches exactly: same answers, no graph."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import numpy as np

from facegrid import grpcserver
from facegrid.indexer.core import Shard
from facegrid.indexer.core.gallery import HnswParams
from facegrid.indexer.http_api import create_app
from facegrid.indexer.replica import ReplicationState
from facegrid.indexer.servicer import IndexShardServicer
from facegrid.v1 import index_pb2 as pb
from facegrid.v1 import index_pb2_grpc


async def test_search_is_exact_while_fast_index_is_not_licensed(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    shard = Shard("s", tmp_path, HnswParams(graph_min=100))
    vectors = (rng.normal(size=(300, 128)) * 0.1).astype("<f4")
    shard.add("g", np.arange(1, 301, dtype=np.uint64), vectors)
    shard.wait_indexed()
    licensed = {"fast-index": True}
    fast_index = lambda: licensed["fast-index"]  # noqa: E731 (the licence client's answer)
    service = grpcserver.GrpcService(
        name="indexer-s",
        listen="127.0.0.1:0",
        registrations=[
            grpcserver.Registration(
                index_pb2_grpc.add_IndexShardServicer_to_server,
                IndexShardServicer(shard, ReplicationState(), fast_index=fast_index),
                pb.DESCRIPTOR.services_by_name["IndexShard"].full_name,
            )
        ],
    )
    server, _, port = await grpcserver.start(service)
    app = create_app(shard, ReplicationState(), fast_index)
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as http,
        ):
            stub = index_pb2_grpc.IndexShardStub(channel)
            query = pb.SearchRequest(gallery="g", vector=vectors[7].tobytes(), top_n=3)
            with_graph = await stub.Search(query)
            assert with_graph.used_index
            seed = await http.post("/v1/g/search/3/0", content=vectors[7].tobytes())
            assert seed.headers["X-search-stat"] == "with_index"

            licensed["fast-index"] = False
            exact = await stub.Search(query)
            assert not exact.used_index
            assert [h.id for h in exact.hits] == [h.id for h in with_graph.hits]
            seed = await http.post("/v1/g/search/3/0", content=vectors[7].tobytes())
            assert seed.headers["X-search-stat"] == "without_index"
    finally:
        await server.stop(None)
        shard.close()
