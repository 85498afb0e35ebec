"""People-facing task endpoints: pictures in, readable answers out (routes in `routes`)."""
