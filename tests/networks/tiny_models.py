"""Tiny SD1- and SDXL-shaped diffusers UNets, CLIP text encoders and an ldm UNet, built in code."""
from __future__ import annotations

import torch


def sd1_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32)


def sdxl_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), cross_attention_dim=64, attention_head_dim=(2, 4),
        norm_num_groups=32, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8, use_linear_projection=True)


def clip_text_model(hidden_size: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return CLIPTextModel(CLIPTextConfig(hidden_size=hidden_size, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=2, vocab_size=1000, projection_dim=32))


def ldm_sd1_unet():
    """The ldm UNetModel (as the WebUI holds it) with the same architecture as sd1_unet()."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(0)
    return UNetModel(image_size=8, in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[1],
                     num_res_blocks=1, channel_mult=(1, 2), num_heads=4, use_spatial_transformer=True,
                     transformer_depth=1, context_dim=32, legacy=False)
