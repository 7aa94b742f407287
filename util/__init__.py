"""Machinery below the method files: nothing here imports clip_model, prompts, video_data, train,
evaluate or zeroshot. What a module needs from them (a video encoder, a frame reader) it takes as a
function argument."""
