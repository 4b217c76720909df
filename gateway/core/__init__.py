"""The gateway's domain: API errors, tokens and the operations behind each route.

No gRPC and no generated code: routes call these through small ports (`GalleryDirectory`,
`TokenStore`) that the gRPC and MongoDB adapters implement.
"""
