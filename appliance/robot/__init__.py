"""Robot backends and grasp plans. pylibfranka is imported only by the franka backend."""
