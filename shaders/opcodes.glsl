// opcodes.glsl: the op codes of unary.comp and binary.comp, generated from
// opcodes.txt by the compile-shaders tool (engine/src/vulkan/opcode_table.rs).
// Do not edit: change opcodes.txt and run compile-shaders.
const uint UNARY_NEG = 0u;
const uint UNARY_EXP = 1u;
const uint UNARY_LOG = 2u;
const uint UNARY_SIGMOID = 3u;
const uint UNARY_SOFTPLUS = 4u;
const uint UNARY_RELU = 5u;
const uint UNARY_HEAVISIDE = 6u;
const uint UNARY_SQRT = 7u;
const uint UNARY_RECIP = 8u;
const uint UNARY_SQUARE = 9u;
const uint UNARY_ABS = 10u;
const uint UNARY_TANH = 11u;
const uint UNARY_SCALE = 12u;
const uint UNARY_ADD_SCALAR = 13u;
const uint UNARY_POWF = 14u;
const uint UNARY_LEAKY_RELU = 15u;
const uint BINARY_ADD = 0u;
const uint BINARY_SUB = 1u;
const uint BINARY_MUL = 2u;
const uint BINARY_DIV = 3u;
const uint BINARY_MAX = 4u;
const uint BINARY_RELU_GRAD = 5u;
