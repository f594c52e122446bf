# S2 (Zoph et al. 2020 §3.1): AutoAugment with the detection policy of Zoph et al. 2019 + S1.
_base_ = ["./zoph2019_det_v0.py"]
policy = [dict(type="AutoAugment", policies={{_base_.policies}})]
scale_jitter = (0.8, 1.2)
flip_prob = 0.5
