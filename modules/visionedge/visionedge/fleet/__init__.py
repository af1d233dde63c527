"""Fleet-managed model rollout on IoT Hub deployments: rings, plan, gated waves, halt and rollback (extra [fleet])."""
