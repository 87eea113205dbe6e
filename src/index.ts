// Public API.
export { fromPretrained } from './api.js';
export type { LoadOptions, LoadedModel } from './api.js';
export { generate, generateStream, padLeft } from './generate/generate.js';
export type { GenerateOptions, GenerateResult, StreamEvent, FinishReason } from './generate/generate.js';
export { TextStreamer, IncrementalDecoder } from './generate/stream.js';
export { normalizeGenerationConfig, readGenerationConfig } from './generate/config.js';
export type { GenerationConfig } from './generate/config.js';
export { Tokenizer, TokenizerError } from './tokenizer/index.js';
export type { ChatMessage, ChatTemplateOptions } from './tokenizer/index.js';
export { perplexity, slidingWindows } from './eval/perplexity.js';
export { lambada, lambadaExample, readLambada, LambadaDataError } from './eval/lambada.js';
export { plan, modelShape, kvBytesPerToken, DEVICES, MODEL_PRESETS } from './plan/plan.js';
export { readConfig, parseConfig, ConfigError, UnsupportedModelError } from './io/config.js';
export type { ModelConfig, LlamaConfig, OptConfig } from './io/config.js';
export { readSafetensors, writeSafetensors, serializeSafetensors, SafetensorsError } from './io/safetensors.js';
export { loadStateDict, saveStateDict, checkpointFiles } from './io/checkpoint.js';
export { resolveModelDir, hubCacheDir, ModelNotFoundError } from './io/hub.js';
export { Tensor } from './tensor/tensor.js';
export type { DType } from './tensor/dtype.js';
export type { CausalLM, ForwardOptions } from './models/model.js';
export { KVCache } from './nn/kvcache.js';
export { getBackend, defaultBackend } from './backend/index.js';
export type { Backend } from './backend/backend.js';
export { warnOnce, setWarningHandler } from './util/warn.js';
export type { WarningHandler } from './util/warn.js';
export { setThreads, getThreads, cpuInfo, measureRoofline, cpuAvailable } from './backend/cpu/index.js';
export type { CpuInfo, Roofline } from './backend/cpu/index.js';
export { NativeUnavailableError } from './native/addon.js';
export type { Prompt } from './generate/generate.js';
export type { IncrementalDecoderOptions } from './generate/stream.js';
export { NonFiniteLogitsError } from './generate/logits.js';
export { GenerationConfigError } from './generate/config.js';
export { MissingTensorError, TokenIdError } from './models/model.js';
export { CacheFullError, CACHE_CHUNK } from './nn/kvcache.js';
export { HubError } from './io/hub.js';
export { CheckpointError } from './io/checkpoint.js';
export type { SaveOptions, SaveStep } from './io/checkpoint.js';
export { FileAccessError } from './io/safetensors.js';
export { resolveGeneration } from './generate/config.js';
export type { NormalizeOptions } from './generate/config.js';
export { CONFIG_LIMITS } from './io/config.js';
export { parseQuantizationConfig } from './io/quantconfig.js';
export type { BitsAndBytesConfig, BitsAndBytesSpec, QuantizationSpec } from './io/quantconfig.js';
export { GPTQConfig, gptqConfigDict } from './io/gptqconfig.js';
export type { GPTQConfigOptions, GptqQuantizationSpec } from './io/gptqconfig.js';
export type { QuantizedWeight, QuantFormat, GptqQuantizedWeight, AwqQuantizedWeight } from './quant/qweight.js';
export { Linear4bit, Linear8bitLt, GptqLinear, AwqLinear, QuantLinear } from './nn/quant.js';
export {
  GptqError, packGptq, unpackGptq, dequantizeGptq, convertGptqFormat, gptqToStateDict, gptqFromStateDict, gptqShapeProblem,
} from './quant/gptq-format.js';
export type { GptqWeight, GptqCheckpointFormat } from './quant/gptq-format.js';
export type { GptqCodes, GptqOptions, GptqBits } from './quant/gptq-types.js';
export { installGptq, installAwq } from './models/factory.js';
export { AwqConfig, awqConfigDict } from './io/awqconfig.js';
export type { AwqConfigOptions, AwqQuantizationSpec, AwqVersion } from './io/awqconfig.js';
export {
  AwqError, packAwq, unpackAwq, dequantizeAwq, convertAwqLayout, awqToStateDict, awqFromStateDict, awqShapeProblem,
} from './quant/awq-format.js';
export type { AwqWeight, AwqLayout } from './quant/awq-format.js';
export { quantizeLoadedAwq } from './quant/awq-run.js';
export type { AwqRun, AwqRunOptions } from './quant/awq-run.js';
export type { AwqModelResult, AwqProgress, AwqGroupStats, AwqLayerStats } from './quant/awq-driver.js';
export { Bnb4Error } from './quant/bnb4.js';
export { Int8Error } from './quant/int8.js';
export { chatTerminators } from './generate/terminators.js';
export { demoModelPath } from './demo.js';
export { readChatTemplateFile, DEFAULT_TEMPLATE_BUDGET } from './tokenizer/template.js';
export type { ChatTemplateSource, TemplateBudget } from './tokenizer/template.js';
export { ReadOnlyTensorError, ShapeError, type TensorFlags } from './tensor/tensor.js';
export {
  TruncatedFileError, HeaderTooLargeError, InvalidHeaderError, InvalidOffsetsError, SizeMismatchError, DuplicateTensorError,
  UnknownDtypeError, UnsupportedDtypeError, TensorNotFoundError, SafetensorsWriteError,
} from './io/safetensors.js';
export { checkGenerationFits, isRowError } from './generate/generate.js';
export type { FitsOptions, RowError } from './generate/generate.js';
export { StopStringMatcher } from './generate/stream.js';
export { cleanUpTokenizationSpaces } from './tokenizer/index.js';
export type { PerplexityOptions, PerplexityResult, PerplexityProgress, SlidingWindow } from './eval/perplexity.js';
export type { LambadaExample, LambadaExampleResult, LambadaOptions, LambadaProgress, LambadaResult } from './eval/lambada.js';
export type { OnProgress, Progress } from './util/progress.js';
export { savePretrained, quantizedStateDict, SavePretrainedError } from './io/save.js';
export type { SavePretrainedOptions, SavePretrainedResult } from './io/save.js';
export type { QuantizedLayerEvent } from './models/factory.js';
export { quantStats } from './quant/stats.js';
export type { QuantStats } from './quant/stats.js';
