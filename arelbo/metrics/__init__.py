"""The paper's metrics: FID and KID on pytorch-fid's Inception features (and the Inception weights
they need), interpolation latents for Table 4, and Section 3's criteria (MI bound, expected gap,
local smoothness).

Depends on `arelbo.core` only.
"""
