"""The licensing service: the licence in force and its limits (the seed's NTLS)."""
