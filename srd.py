"""The SRD model for training: networks + one training step's forward that returns named losses.

``SRDModel(opt)`` holds the depth encoder/decoder (with DOR), the pose network and, with
``--predictive_mask``, the mask decoder. ``model(inputs, teacher)`` runs depth of frame 0, poses to each
source frame, warps the sources and returns ``(outputs, losses)`` where ``losses`` is a dict of named
scalar terms (``photometric``, ``smoothness``, and ``distillation`` / ``mask_reg`` when active). The
Trainer sums them. The teacher (``Teacher``: a frozen copy of the depth encoder + decoder) is passed in,
not owned, so that DDP wraps only the student.

Mixed precision (``--amp``): only the networks (student, teacher, pose, mask) run under autocast;
their outputs are cast to float32 before the geometry and the losses. Under autocast the matrix
products of back-projection and projection would run in bfloat16 / float16 (8 / 11 significant
bits): pixel coordinates at 640 px would then be off by several pixels, and SSIM's variances
(``E[x^2] - E[x]^2``) would cancel. The convolutions are where the time goes, so nothing is lost.
"""

import copy
import os
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

import losses as L
from layers import (SSIM, BackprojectDepth, Project3D, disp_to_depth, get_smooth_loss,
                    transformation_from_parameters)
from networks import (ModelSpec, build_depth, build_depth_decoder, build_pose, networks_by_name,
                      predict_pose)
from utils import cpuinfo_field


def training_frame_ids(opt) -> list:
    """Frame ids the loader must provide: ``--frame_ids`` plus ``"s"`` with ``--use_stereo``."""
    return list(opt.frame_ids) + (["s"] if opt.use_stereo else [])


def model_spec(opt) -> ModelSpec:
    """The :class:`~networks.spec.ModelSpec` of the training options (what encoder.pth records)."""
    return ModelSpec.from_mapping(vars(opt))


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) under which bfloat16 convolutions still
# run natively; a lower cap (AVX2, AVX512_CORE, ...) makes oneDNN emulate them.
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10_", "ALL",
                     "DEFAULT")
# Measured with `bench/bench_train_step.py --configs dor_srd --batch_size 4 --height 64 --width 192`
# on 2 AVX2-only AMD EPYC cores: 0.81 s per step in float32, 9.67 s with --amp (issue 27); on
# 2 AVX-512 BF16 cores with oneDNN capped at AVX2: 0.69 s against 7.37 s.
EMULATED_BF16_STEP_SLOWDOWN = 10


def cpu_bf16_is_native() -> bool:
    """Whether this CPU computes bfloat16 convolutions natively: AVX-512 BF16 or AMX on x86 (ARM:
    the ``bf16`` feature), and oneDNN not capped below them by ``ONEDNN_MAX_CPU_ISA``. Elsewhere
    (e.g. AVX2 only) oneDNN emulates bfloat16 and a training step under ``--amp`` is about
    ``EMULATED_BF16_STEP_SLOWDOWN`` times slower than in float32."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap and not cap.startswith(_ONEDNN_BF16_ISAS):
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported",
                                                           "_is_amx_tile_supported")]
    if any(probe is not None and probe() for probe in probes):
        return True
    flags = set((cpuinfo_field("flags") or cpuinfo_field("Features") or "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def emulated_bf16_message() -> str:
    """The one line printed when ``--amp`` on the CPU falls back to float32."""
    return (f"--amp: bfloat16 is emulated on this CPU (no AVX-512 BF16 or AMX), a training step "
            f"is about {EMULATED_BF16_STEP_SLOWDOWN}x slower than in float32; --amp is meant for "
            f"CUDA or CPUs with AMX / AVX-512 BF16: training in float32 (--force_amp keeps "
            f"bfloat16)")


def amp_dtype(opt, device, bf16_native: Optional[bool] = None):
    """The autocast dtype of ``--amp`` on ``device``: float16 on CUDA (the Trainer adds a grad
    scaler); bfloat16 on a CPU that computes it natively (``cpu_bf16_is_native``, or
    ``bf16_native`` when given) or with ``--force_amp``; None (float32) without ``--amp`` or on a
    CPU that would emulate bfloat16 (the caller prints ``emulated_bf16_message``)."""
    if not opt.amp:
        return None
    if torch.device(device).type == "cuda":
        return torch.float16
    native = cpu_bf16_is_native() if bf16_native is None else bf16_native
    return torch.bfloat16 if native or opt.force_amp else None


def to_float32(x):
    """Cast the half-precision tensors (float16, bfloat16) in a network's output (tensor, dict, list
    or tuple) to float32; other tensors (float32, float64, integer) are returned as they are."""
    if torch.is_tensor(x):
        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if isinstance(x, dict):
        return {k: to_float32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_float32(v) for v in x)
    return x


def distillation_source(frame_ids: Sequence) -> Optional[Union[int, str]]:
    """The frame the multiview check projects into: +1 when loaded, else the stereo partner."""
    if 1 in frame_ids:
        return 1
    return "s" if "s" in frame_ids else None


class Teacher(nn.Module):
    """Frozen copy of the student's depth encoder + decoder, run under no_grad.

    Args:
        encoder, depth: the student's networks (deep-copied).
        mode: "train" (default, the official code): BatchNorm normalises with the statistics of the
            batch it is given and drop-path is active (MPViT); each frame is then run as its own
            batch, as the official code does, so that its statistics are those of that frame's
            images. "eval": BatchNorm running statistics and no drop-path, a deterministic teacher.

    forward(images ``[2B,3,H,W]``: frame 0 stacked on the source frame) -> the decoder's dict with
    every tensor ``[2B,...]``. It runs in the channels_last memory format (same numbers, ~15% faster
    forward on the CPU, which is most of SRD's overhead per step: bench/bench_train_step.py).
    """

    MODES = ("eval", "train")

    def __init__(self, encoder, depth, mode="train"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"teacher mode {mode!r}: choose one of {', '.join(self.MODES)}")
        self.mode = mode
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.depth = copy.deepcopy(depth).requires_grad_(False)
        self.to(memory_format=torch.channels_last)
        self.train()

    def train(self, mode=True):  # the mode is fixed at construction, whatever the caller asks
        return super().train(self.mode == "train")

    @torch.no_grad()
    def forward(self, images):
        images = images.contiguous(memory_format=torch.channels_last)
        if self.mode == "eval":
            return self.depth(self.encoder(images))
        halves = [self.depth(self.encoder(x)) for x in torch.chunk(images, 2)]
        return {k: torch.cat([h[k] for h in halves]) for k in halves[0]}


class SRDModel(nn.Module):
    """Student networks and the self-supervised loss of one step. See the module docstring.

    Args:
        opt: the training options.
        amp_dtype: autocast dtype for the networks (``amp_dtype(opt, device)``), or None for float32.
    """

    def __init__(self, opt, amp_dtype=None):
        super().__init__()
        self.opt = opt
        self.amp_dtype = amp_dtype
        self.frame_ids = training_frame_ids(opt)
        self.scales = list(opt.scales)
        self.use_pose_net = not (opt.use_stereo and list(opt.frame_ids) == [0])
        pretrained = opt.weights_init == "pretrained"
        self.spec = model_spec(opt)

        self.encoder, self.depth = build_depth(self.spec, pretrained, opt.encoder_weights)
        self.pose_encoder, self.pose = None, None
        if self.use_pose_net:
            self.pose_encoder, self.pose = build_pose(self.spec, self.encoder, pretrained)
        self.mask_decoder = None
        if opt.predictive_mask:
            self.mask_decoder = build_depth_decoder(
                "unet", self.encoder.num_ch_enc, self.scales, use_dor=False,
                num_output_channels=len(self.frame_ids) - 1)

        self.ssim = None if opt.no_ssim else SSIM()
        h, w = opt.height, opt.width
        self.backproject = nn.ModuleList(BackprojectDepth(h // 2 ** s, w // 2 ** s) for s in range(4))
        self.project = nn.ModuleList(Project3D(h // 2 ** s, w // 2 ** s) for s in range(4))

    def networks(self):
        """Name -> module of the networks written to ``weights_<epoch>/<name>.pth``."""
        return networks_by_name(self.encoder, self.depth, self.pose_encoder, self.pose,
                                self.mask_decoder)

    def _autocast(self, like):
        """Autocast context for a network forward on ``like``'s device (a no-op without --amp)."""
        return torch.autocast(like.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    # ------------------------------------------------------------------ forward
    def forward(self, inputs, teacher=None, automask=True):
        """One step's outputs and loss terms. ``automask=False`` leaves auto-masking out of the loss
        (the Trainer's warm-up, ``--automask_warmup_epochs``); the mask is still computed at scale 0
        and returned as ``("automask", 0)`` so that its share can be logged."""
        outputs, features = self._predict_depth(inputs)
        if self.use_pose_net:
            outputs.update(self._predict_poses(inputs, features))
        self._warp_sources(inputs, outputs)
        terms = self._photometric_and_smoothness(inputs, outputs, automask)
        if teacher is not None:
            terms["distillation"] = self._distillation(inputs, outputs, teacher)
        return outputs, terms

    def _predict_depth(self, inputs):
        """Depth (and predictive-mask) outputs in float32, and the encoder features per frame."""
        with self._autocast(inputs[("color_aug", 0, 0)]):
            features = self._encode(inputs)
            outputs = dict(self.depth(features[0]))
            if self.mask_decoder is not None:
                for s, m in self.mask_decoder(features[0]).items():
                    outputs[("predictive_mask", s[1])] = m
        return to_float32(outputs), features

    def _encode(self, inputs):
        if self.opt.pose_model_type == "shared":
            frames = [f for f in self.frame_ids if f != "s"]
            all_feats = self.encoder(torch.cat([inputs[("color_aug", f, 0)] for f in frames]))
            chunks = [torch.chunk(x, len(frames)) for x in all_feats]
            return {f: [c[i] for c in chunks] for i, f in enumerate(frames)}
        return {0: self.encoder(inputs[("color_aug", 0, 0)])}

    def _predict_poses(self, inputs, features):
        out = {}
        sources = [f for f in self.frame_ids[1:] if f != "s"]
        if self.opt.pose_model_input == "pairs":
            for f in sources:
                pair = [f, 0] if f < 0 else [0, f]
                axisangle, translation = self._run_pose(inputs, features, pair)
                self._store_pose(out, f, axisangle[:, 0], translation[:, 0], invert=(f < 0))
        else:
            axisangle, translation = self._run_pose(inputs, features,
                                                    [f for f in self.frame_ids if f != "s"])
            for i, f in enumerate(sources):
                self._store_pose(out, f, axisangle[:, i], translation[:, i], invert=False)
        return out

    def _run_pose(self, inputs, features, frames):
        """(axisangle, translation) in float32 for ``frames`` (the pose network's input order)."""
        with self._autocast(inputs[("color_aug", 0, 0)]):
            return to_float32(self._pose_network(inputs, features, frames))

    def _pose_network(self, inputs, features, frames):
        images = [inputs[("color_aug", f, 0)] for f in frames]
        feats = [features[f] for f in frames] if self.opt.pose_model_type == "shared" else None
        return predict_pose(self.opt.pose_model_type, self.pose_encoder, self.pose, images, feats)

    def _store_pose(self, out, f, axisangle, translation, invert):
        out[("axisangle", 0, f)] = axisangle
        out[("translation", 0, f)] = translation
        out[("cam_T_cam", 0, f)] = transformation_from_parameters(axisangle, translation, invert)

    def _full_res(self, x):
        return F.interpolate(x, [self.opt.height, self.opt.width], mode="bilinear",
                             align_corners=False)

    def _warp_sources(self, inputs, outputs):
        """Warp every source frame into frame 0 at every scale (Monodepth2's view synthesis)."""
        opt = self.opt
        for scale in self.scales:
            disp = outputs[("disp", scale)]
            src_scale = scale if opt.v1_multiscale else 0
            if not opt.v1_multiscale:
                disp = self._full_res(disp)
            _, depth = disp_to_depth(disp, opt.min_depth, opt.max_depth)
            outputs[("depth", 0, scale)] = depth
            cam_points = self.backproject[src_scale](depth, inputs[("inv_K", src_scale)])
            for f in self.frame_ids[1:]:
                T = self._source_transform(inputs, outputs, f, depth)
                pix = self.project[src_scale](cam_points, inputs[("K", src_scale)], T)
                outputs[("sample", f, scale)] = pix
                outputs[("color", f, scale)] = F.grid_sample(
                    inputs[("color", f, src_scale)], pix, padding_mode="border", align_corners=True)

    def _source_transform(self, inputs, outputs, f, depth):
        if f == "s":
            return inputs["stereo_T"]
        if self.opt.pose_model_type == "posecnn":
            # PoseCNN's translation is scaled by the mean inverse depth (Wang et al., 2018).
            mean_inv_depth = (1.0 / depth).mean(dim=(2, 3))
            return transformation_from_parameters(
                outputs[("axisangle", 0, f)], outputs[("translation", 0, f)] * mean_inv_depth[:, None],
                invert=(f < 0))
        return outputs[("cam_T_cam", 0, f)]

    def _photometric_and_smoothness(self, inputs, outputs, automask=True):
        opt = self.opt
        photometric, smoothness, mask_reg = 0.0, 0.0, 0.0
        identity_cache = {}
        for scale in self.scales:
            src_scale = scale if opt.v1_multiscale else 0
            target = inputs[("color", 0, src_scale)]
            sources = self.frame_ids[1:]
            reproj = torch.cat([L.reprojection_loss(outputs[("color", f, scale)], target, self.ssim)
                                for f in sources], 1)
            identity = None
            # in the warm-up (automask=False) the mask is only logged, at the first scale
            if not opt.disable_automasking and (automask or scale == self.scales[0]):
                # without --v1_multiscale every scale compares the same full-resolution images
                if src_scale not in identity_cache:
                    identity_cache[src_scale] = torch.cat(
                        [L.reprojection_loss(inputs[("color", f, src_scale)], target, self.ssim)
                         for f in sources], 1)
                identity = identity_cache[src_scale]
            mask = None
            if opt.predictive_mask:
                mask = outputs[("predictive_mask", scale)]
                if not opt.v1_multiscale:
                    mask = self._full_res(mask)
                mask_reg = mask_reg + 0.2 * F.binary_cross_entropy(mask, torch.ones_like(mask))
            if identity is not None and not automask:
                with torch.no_grad():
                    _, kept = L.combine_reprojection(reproj, identity, opt.avg_reprojection, mask)
                outputs[("automask", scale)] = kept.float()
                identity = None
            loss, kept = L.combine_reprojection(reproj, identity, opt.avg_reprojection, mask)
            if kept is not None:
                outputs[("automask", scale)] = kept.detach().float()
            photometric = photometric + loss.mean()
            smooth = get_smooth_loss(outputs[("disp", scale)], inputs[("color", 0, scale)])
            smoothness = smoothness + opt.disparity_smoothness * smooth / (2 ** scale)
        n = len(self.scales)
        terms = {"photometric": photometric / n, "smoothness": smoothness / n}
        if opt.predictive_mask:
            terms["mask_reg"] = mask_reg / n
        return terms

    def _distillation(self, inputs, outputs, teacher):
        """SRD: student depth vs teacher depth where the multiview check keeps the teacher."""
        opt = self.opt
        src = distillation_source(self.frame_ids)
        B = inputs[("color_aug", 0, 0)].shape[0]
        with torch.no_grad():
            images = torch.cat([inputs[("color_aug", 0, 0)], inputs[("color_aug", src, 0)]])
            with self._autocast(images):
                t_out = teacher(images)  # one forward for frame 0 and the source frame
            t_out = to_float32(t_out)
            t_depth = torch.cat([disp_to_depth(self._full_res(t_out[("disp", s)]),
                                               opt.min_depth, opt.max_depth)[1].view(2, B, 1,
                                                                                      opt.height,
                                                                                      opt.width)
                                 for s in self.scales], dim=1)  # [2, S*B, 1, H, W]
            T = inputs["stereo_T"] if src == "s" else outputs[("cam_T_cam", 0, src)].detach()
            mask, _ = L.multiview_check(t_depth[0], t_depth[1], inputs[("K", 0)], T.float())
        outputs["teacher_depth"] = t_depth[0]
        outputs["mv_mask"] = mask
        total = 0.0
        for k, scale in enumerate(self.scales):
            d_student = outputs[("depth", 0, scale)]
            if opt.v1_multiscale:
                d_student = disp_to_depth(self._full_res(outputs[("disp", scale)]), opt.min_depth,
                                          opt.max_depth)[1]
            sl = slice(k * B, (k + 1) * B)
            total = total + L.distillation_loss(d_student, t_depth[0][sl], mask[sl])
        return opt.distill_weight * total / len(self.scales)
