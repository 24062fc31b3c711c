//! The ggml type table: type id, name, elements per block and bytes per block.
//!
//! The numbers mirror `ggml/src/ggml.c` (`type_traits`) and `ggml-common.h`.
//! They agree with the `gguf` Python package's `GGML_QUANT_SIZES` except for `Q8_1`, where that
//! package still lists 40 bytes while ggml's `block_q8_1` is 36 (two f16 and 32 int8); `Q8_1` is a
//! dot-product scratch type that never appears in model files, and we side with ggml.
//! Every reader and writer takes sizes from here, never from a formula on the type id.

use std::fmt;

macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $name:literal, $block:literal, $bytes:literal;)*) => {
        /// A ggml tensor type as stored in GGUF tensor infos.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(non_camel_case_types, reason = "the names are ggml's")]
        pub enum GgmlType {
            $(
                #[doc = concat!("`", $name, "`: type id ", stringify!($id), ", ", stringify!($block),
                    " elements in ", stringify!($bytes), " bytes.")]
                $variant,
            )*
        }

        impl GgmlType {
            /// Every type ggml (and the `gguf` Python package) knows, by id.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant),*];

            /// The type id written in GGUF tensor infos.
            #[must_use]
            pub const fn id(self) -> u32 {
                match self { $(GgmlType::$variant => $id),* }
            }

            /// The type for a GGUF type id; `None` for ids ggml never assigned or retired.
            #[must_use]
            pub const fn from_id(id: u32) -> Option<GgmlType> {
                match id { $($id => Some(GgmlType::$variant),)* _ => None }
            }

            /// ggml's name for the type (`"Q4_K"`, `"BF16"`).
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $(GgmlType::$variant => $name),* }
            }

            /// Elements per block (1 for dense types).
            #[must_use]
            pub const fn block_size(self) -> usize {
                match self { $(GgmlType::$variant => $block),* }
            }

            /// Bytes per block.
            #[must_use]
            pub const fn type_size(self) -> usize {
                match self { $(GgmlType::$variant => $bytes),* }
            }
        }
    };
}

ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 18;
    Q4_1 = 3, "Q4_1", 32, 20;
    Q5_0 = 6, "Q5_0", 32, 22;
    Q5_1 = 7, "Q5_1", 32, 24;
    Q8_0 = 8, "Q8_0", 32, 34;
    Q8_1 = 9, "Q8_1", 32, 36;
    Q2_K = 10, "Q2_K", 256, 84;
    Q3_K = 11, "Q3_K", 256, 110;
    Q4_K = 12, "Q4_K", 256, 144;
    Q5_K = 13, "Q5_K", 256, 176;
    Q6_K = 14, "Q6_K", 256, 210;
    Q8_K = 15, "Q8_K", 256, 292;
    IQ2_XXS = 16, "IQ2_XXS", 256, 66;
    IQ2_XS = 17, "IQ2_XS", 256, 74;
    IQ3_XXS = 18, "IQ3_XXS", 256, 98;
    IQ1_S = 19, "IQ1_S", 256, 50;
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    IQ3_S = 21, "IQ3_S", 256, 110;
    IQ2_S = 22, "IQ2_S", 256, 82;
    IQ4_XS = 23, "IQ4_XS", 256, 136;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", 256, 56;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", 256, 54;
    TQ2_0 = 35, "TQ2_0", 256, 66;
    MXFP4 = 39, "MXFP4", 32, 17;
    NVFP4 = 40, "NVFP4", 64, 36;
    Q1_0 = 41, "Q1_0", 128, 18;
}

impl GgmlType {
    /// Looks a type up by name, ignoring ASCII case (`"q4_k"` and `"Q4_K"` both work).
    #[must_use]
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Whether elements are stored one by one (no blocks).
    #[must_use]
    pub const fn is_dense(self) -> bool {
        self.block_size() == 1
    }

    /// Bytes taken by a row of `ne0` elements, or `None` when `ne0` is not a whole number of blocks
    /// or the size overflows.
    #[must_use]
    pub const fn row_bytes(self, ne0: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !ne0.is_multiple_of(block) {
            return None;
        }
        (ne0 / block).checked_mul(self.type_size() as u64)
    }

    /// Storage bits per weight: `8 × bytes per block / elements per block` (Q8_0 = 8.5, Q4_K = 4.5).
    #[must_use]
    pub fn bits_per_weight(self) -> f64 {
        (self.type_size() * 8) as f64 / self.block_size() as f64
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::GgmlType;

    #[test]
    fn ids_and_names_round_trip() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
            assert_eq!(GgmlType::from_name(&t.name().to_lowercase()), Some(t));
        }
        // Ids 4 and 5 (Q4_2, Q4_3) and 31..=33 (Q4_0_4_4 and friends) were retired by ggml.
        for retired in [4, 5, 31, 32, 33, 36, 1000] {
            assert_eq!(GgmlType::from_id(retired), None);
        }
    }

    #[test]
    fn bits_per_weight_of_common_types() {
        assert!((GgmlType::Q8_0.bits_per_weight() - 8.5).abs() < 1e-12);
        assert!((GgmlType::Q4_K.bits_per_weight() - 4.5).abs() < 1e-12);
        assert!((GgmlType::Q6_K.bits_per_weight() - 6.5625).abs() < 1e-12);
        assert!((GgmlType::TQ2_0.bits_per_weight() - 2.0625).abs() < 1e-12);
        assert!((GgmlType::BF16.bits_per_weight() - 16.0).abs() < 1e-12);
    }

    #[test]
    fn row_bytes_requires_whole_blocks() {
        assert_eq!(GgmlType::Q4_K.row_bytes(3072), Some(12 * 144));
        assert_eq!(GgmlType::Q4_K.row_bytes(320), None);
        assert_eq!(GgmlType::Q8_0.row_bytes(320), Some(10 * 34));
        assert_eq!(GgmlType::F32.row_bytes(u64::MAX), None, "overflow is None, not a wrap");
    }
}
